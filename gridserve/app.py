"""``make_app``: a ready Tornado application with gridserve's routes."""

from __future__ import annotations

import logging
import time
from typing import Any

import tornado.web

from gridserve.acl import ACL, SigningKeys
from gridserve.handlers.errors import NotFoundHandler
from gridserve.handlers.files import DEFAULT_LINGER_BYTES, DEFAULT_LINGER_SECONDS, FilesHandler
from gridserve.handlers.ops import HealthHandler, MetricsHandler, ReadyHandler
from gridserve.handlers.stream import DEFAULT_SEND_BUFFER
from gridserve.handlers.tus import TusHandler
from gridserve.handlers.ui import ui_routes
from gridserve.handoff import s3_storage_of
from gridserve.media.service import MediaService
from gridserve.metrics import Metrics
from gridserve.storage.base import Storage
from gridserve.storage.cache import CachedStorage
from gridserve.tracking import RequestTracker
from gridserve.tus import DEFAULT_EXPIRY_SECONDS
from gridserve.uploads import UploadPolicy

access_log = logging.getLogger("gridserve.access")


def combined_log_line(handler: tornado.web.RequestHandler) -> str:
    """The request in Apache's combined log format."""
    request = handler.request
    sent = getattr(handler, "bytes_sent", None)
    if sent is None:
        sent = handler._headers.get("Content-Length", "-")
    when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())

    def quoted(value: str | None) -> str:
        return (value or "-").replace("\\", "\\\\").replace('"', '\\"')

    return (
        f"{request.remote_ip or '-'} - - [{when}] "
        f'"{quoted(request.method)} {quoted(request.uri)} {request.version}" '
        f"{handler.get_status()} {sent} "
        f'"{quoted(request.headers.get("Referer"))}" "{quoted(request.headers.get("User-Agent"))}"'
    )


def log_combined(handler: tornado.web.RequestHandler) -> None:
    access_log.info(combined_log_line(handler))


def make_app(
    storage: Storage,
    prefix: str = "/fs",
    *,
    cache_time: int = 0,
    max_ranges: int = 16,
    acl: ACL | None = None,
    upload_policy: UploadPolicy | None = None,
    cors_origin: str | None = None,
    send_timeout: float = 60.0,
    send_buffer: int | None = DEFAULT_SEND_BUFFER,
    metrics: Metrics | None = None,
    ops_routes: bool = True,
    combined_access_log: bool = False,
    ui: bool = False,
    ui_uploads: bool = False,
    signing_key: SigningKeys | None = None,
    linger_seconds: float = DEFAULT_LINGER_SECONDS,
    linger_bytes: int = DEFAULT_LINGER_BYTES,
    media: MediaService | None = None,
    upload_expiry: float = DEFAULT_EXPIRY_SECONDS,
    **settings: Any,
) -> tornado.web.Application:
    """An application serving ``storage`` under ``prefix``: read, list, upload, delete (see
        :mod:`gridserve.handlers.files`), plus ``/healthz``, ``/readyz`` and ``/metrics`` unless
        ``ops_routes`` is false.

        ``acl`` decides who may do what (default: everyone reads, nobody writes); ``upload_policy``
        what uploads are accepted; ``cors_origin`` lets players on other origins fetch (an origin, a
        comma-separated list, or ``*``); ``send_timeout`` how long a client may take no data before
        it is disconnected; ``send_buffer`` the kernel send buffer of streaming connections (see
        :class:`~gridserve.handlers.GridFSHandler`); ``metrics`` is the registry to record into (a
        fresh one by default); ``combined_access_log`` logs each request to ``gridserve.access`` in
        the combined format. ``ui`` serves the media page at ``/`` (``ui_uploads``: with its upload
        form). ``signing_key`` signs the file URLs that listings return, so a page or player that
        may list can also play when reads need signed URLs. ``linger_seconds`` and ``linger_bytes``
    bound how long and how much of a refused upload's body is read and discarded so the client
    reads the refusal (see :meth:`~gridserve.handlers.FilesHandler.finish`). ``settings`` go to
        ``tornado.web.Application``. The application's ``settings["gridserve_tracker"]`` counts
        requests in flight (for graceful shutdown).
    ``media`` gathers facts and posters after uploads and rewrites MP4/MOV uploads moov-first
    when its ``faststart`` is set (the caller closes it). Resumable uploads (tus 1.0.0) are at
    ``{prefix}/.uploads/`` (:mod:`gridserve.handlers.tus`); ``upload_expiry`` is how many
    seconds an unfinished one lives after its last PATCH.

        To add gridserve to an existing app instead, mount
        :class:`~gridserve.handlers.GridFSHandler` (read-only) or
        :class:`~gridserve.handlers.FilesHandler` on a route of your own.
    """
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    metrics = metrics or Metrics()
    if media is not None and media.metrics is None:
        media.metrics = metrics
    options = {
        "storage": storage,
        "cache_time": cache_time,
        "max_ranges": max_ranges,
        "acl": acl,
        "upload_policy": upload_policy,
        "prefix": prefix,
        "send_timeout": send_timeout,
        "send_buffer": send_buffer,
        "signing_key": signing_key,
        "linger_seconds": linger_seconds,
        "linger_bytes": linger_bytes,
        "media": media,
    }
    routes: list[Any] = []
    if ops_routes:
        routes += [
            (r"/healthz", HealthHandler),
            (r"/readyz", ReadyHandler, {"storage": storage}),
            (r"/metrics", MetricsHandler, {"metrics": metrics}),
        ]
    if ui:
        # Players on the page follow --s3-redirect to S3's origin: its CSP must admit it.
        s3 = s3_storage_of(storage) if settings.get("gridserve_s3_redirect") else None
        routes += ui_routes(prefix, ui_uploads, s3.presigned_origin if s3 is not None else None)
    if prefix:  # "/fs" is the folder "/fs/": its listing, not a 404
        routes.append((prefix, tornado.web.RedirectHandler, {"url": prefix + "/"}))
    tus_options = {
        "storage": storage,
        "acl": acl,
        "upload_policy": upload_policy,
        "prefix": prefix,
        "media": media,
        "upload_expiry": upload_expiry,
        "linger_bytes": linger_bytes,
        "signing_key": signing_key,
    }
    # Before the files route: nothing under .uploads ever reaches it (no file is named there).
    routes.append((rf"{prefix}/\.uploads(?:/(.*))?", TusHandler, tus_options))
    routes.append((rf"{prefix}/(.*)", FilesHandler, options))
    if isinstance(storage, CachedStorage):
        metrics.watch_cache(storage)
    settings.setdefault("gridserve_metrics", metrics)
    settings.setdefault("gridserve_tracker", RequestTracker())
    settings.setdefault("gridserve_cors_origin", cors_origin)
    # Outside every route: the same short plain-text 404 as inside (not Tornado's HTML page).
    settings.setdefault("default_handler_class", NotFoundHandler)
    if combined_access_log:
        settings.setdefault("log_function", log_combined)
    return tornado.web.Application(routes, **settings)
