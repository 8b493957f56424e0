"""``make_app``: a ready Tornado application with gridserve's routes."""

from __future__ import annotations

from typing import Any

import tornado.web

from gridserve.acl import ACL
from gridserve.handlers.files import FilesHandler
from gridserve.storage.base import Storage
from gridserve.uploads import UploadPolicy


def make_app(
    storage: Storage,
    prefix: str = "/fs",
    *,
    cache_time: int = 0,
    max_ranges: int = 16,
    acl: ACL | None = None,
    upload_policy: UploadPolicy | None = None,
    **settings: Any,
) -> tornado.web.Application:
    """An application serving ``storage`` under ``prefix``: read, list, upload, delete (see
    :mod:`gridserve.handlers.files`). ``acl`` decides who may do what (default: everyone reads,
    nobody writes); ``upload_policy`` what uploads are accepted.

    ``settings`` go to ``tornado.web.Application``. To add gridserve to an existing app instead,
    mount :class:`~gridserve.handlers.GridFSHandler` (read-only) or
    :class:`~gridserve.handlers.FilesHandler` on a route of your own.
    """
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    options = {
        "storage": storage,
        "cache_time": cache_time,
        "max_ranges": max_ranges,
        "acl": acl,
        "upload_policy": upload_policy,
        "prefix": prefix,
    }
    routes: list[Any] = [(rf"{prefix}/(.*)", FilesHandler, options)]
    return tornado.web.Application(routes, **settings)
