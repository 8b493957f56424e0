"""``make_app``: a ready Tornado application with gridserve's routes."""

from __future__ import annotations

from typing import Any

import tornado.web

from gridserve.handlers.stream import GridFSHandler
from gridserve.storage.base import Storage


def make_app(
    storage: Storage,
    prefix: str = "/fs",
    *,
    cache_time: int = 0,
    max_ranges: int = 16,
    **settings: Any,
) -> tornado.web.Application:
    """An application serving ``storage`` under ``prefix`` (``GET/HEAD {prefix}/<key>``).

    ``settings`` go to ``tornado.web.Application``. To add gridserve to an existing app instead,
    mount :class:`~gridserve.handlers.GridFSHandler` on a route of your own.
    """
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    options = {"storage": storage, "cache_time": cache_time, "max_ranges": max_ranges}
    routes: list[Any] = [(rf"{prefix}/(.*)", GridFSHandler, options)]
    return tornado.web.Application(routes, **settings)
