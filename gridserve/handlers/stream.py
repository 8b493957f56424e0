"""The streaming handler: a ``tornado.web.StaticFileHandler`` whose files live in a storage.

Mount it like any Tornado handler::

    storage = GridFSStorage(AsyncMongoClient(uri).media)
    app = tornado.web.Application([(r"/fs/(.*)", GridFSHandler, {"storage": storage})])

Tornado's file hooks are synchronous and its ``get_content`` is a synchronous generator, so the
file is looked up once in ``async prepare()``, the synchronous hooks answer from that
:class:`~gridserve.storage.base.FileInfo`, and ``get()`` streams asynchronously: it reads only
the chunks a range needs and awaits ``flush()`` after each one, so a slow client holds at most
the storage's read-ahead plus one chunk in memory.

Override points (as in ``StaticFileHandler``; each receives what is named and runs per request
after the file is resolved):

``resolve_file(key, revision) -> Awaitable[FileInfo]``
    Looks ``key`` up (default: ``self.storage.resolve``). Override to map URLs to keys.
``compute_etag() -> str``
    The ETag header value (default: from the stored MD5 or digest, never by reading content).
``get_modified_time() -> datetime``
    Last-Modified (default: the upload date, whole seconds).
``lookup_action() -> Action``
    The ACL action asked for the file, or for the requested name on a miss (``read``).
``get_content_type() -> str``
    Content-Type (default: stored type, else by extension, else application/octet-stream).
``get_cache_time(path, modified, mime_type) -> int``
    Seconds for ``Cache-Control: max-age`` (default: the ``cache_time`` option; 0 sends none).
``shared_cacheable() -> bool``
    Whether a shared cache (nginx's ``proxy_cache``, a CDN) may serve this response to anyone
    else. Default: only when the request carried no credentials (no ``Authorization`` header,
    no ``sig`` or ``exp`` parameter); otherwise every answer to it (200, 206, 304) says
    ``Cache-Control: private``, whatever the cache time. Override when your ACL admits reads
    by anything else (a cookie, the client's address): return False for those requests.
``set_extra_headers(path) -> None``
    Adds headers to every successful response.

Options given to ``initialize``: ``storage`` (required), ``cache_time`` (0),
``max_ranges`` (16, more is answered with the whole file), ``send_timeout`` (60 s: a client
that accepts no data for that long is disconnected), ``send_buffer`` (bytes of kernel send
buffer per streaming connection, default 512 KiB; 0 or None: the kernel's autotuning, up to
4 MiB. A player that seeks away discards what was queued for it, and the storage read it for
nothing: 512 KiB is the smallest that keeps a 4 MB/s, 100 ms-RTT link full, see
BENCHMARKS.rst; a longer fatter network wants it larger), ``acl`` (the access-control hook of
:mod:`gridserve.acl`, asked for ``read`` before any byte is read, and on a miss with the
requested name as target before answering 404; default: everyone reads).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import re
import socket
import struct
import time
from collections.abc import Awaitable
from contextlib import aclosing
from datetime import datetime
from typing import Any

import tornado.web
from tornado import httputil
from tornado.iostream import StreamClosedError

from gridserve import handoff, ranges, validators
from gridserve.acl import (
    ACL,
    Action,
    AllowReads,
    Refused,
    has_credentials,
    is_allowed,
    signed_expiry,
)
from gridserve.handlers.errors import HTTPErrorWithHeaders, PlainErrors
from gridserve.mediatypes import choose_content_type, content_disposition, is_passive
from gridserve.metrics import Metrics
from gridserve.storage.base import (
    CorruptFile,
    FileInfo,
    FileNotFound,
    InsufficientStorage,
    InvalidKey,
    Storage,
    StorageUnavailable,
)
from gridserve.tracking import CLIENT_CLOSED, DisconnectWatch, RequestTracker

log = logging.getLogger("gridserve.stream")

DEFAULT_SEND_TIMEOUT = 60.0
DEFAULT_SEND_BUFFER = 512 * 1024
YIELD_EVERY = 1024 * 1024
_REVISION_RE = re.compile(r"-?[0-9]{1,9}")
_http_date = functools.lru_cache(maxsize=4096)(httputil.format_timestamp)
"""Last-Modified as Tornado writes it, formatted once per date (email.utils is slow)."""


def parse_revision(value: str | None) -> int | None:
    """``?rev=N`` as an int, None when absent; raises ``HTTPError(400)`` when not an integer."""
    if value is None:
        return None
    if not _REVISION_RE.fullmatch(value):
        raise tornado.web.HTTPError(400, reason="Invalid revision")
    return int(value)


class StorageRequestHandler(PlainErrors):
    """What every gridserve handler shares: short text errors, never a traceback, the same for
    HEAD and GET (:class:`~gridserve.handlers.errors.PlainErrors`); CORS for players on other
    origins (application setting ``gridserve_cors_origin``: an origin, a comma-separated list,
    or ``*``), with preflight ``OPTIONS``; in-flight tracking (``gridserve_tracker``) for
    graceful shutdown; metrics (``gridserve_metrics``)."""

    CORS_EXPOSE = "Content-Range, Accept-Ranges, Content-Length, ETag, Last-Modified"
    CORS_ALLOW_HEADERS = (
        "Range, If-Range, If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since, "
        "Authorization, Content-Type"
    )

    @functools.cached_property
    def metrics(self) -> Metrics | None:
        """The application's metrics (looked up once per request: asked several times)."""
        metrics: Metrics | None = self.settings.get("gridserve_metrics")
        return metrics

    def initialize(self, **kwargs: Any) -> None:
        tracker: RequestTracker | None = self.settings.get("gridserve_tracker")
        self._tracker = tracker
        if tracker is not None:
            tracker.started(self)
        if self.metrics is not None:
            self.metrics.requests_in_flight.inc()
        self._gone = False
        self._task: asyncio.Task[Any] | None = None
        self._watch: DisconnectWatch | None = None
        sock = getattr(getattr(self.request.connection, "stream", None), "socket", None)
        if sock is not None:
            self._watch = DisconnectWatch(sock, self.client_gone)

    async def _execute(self, transforms: Any, *args: bytes, **kwargs: bytes) -> None:
        self._task = asyncio.current_task()  # what client_gone() cancels
        await super()._execute(transforms, *args, **kwargs)

    def _untrack(self) -> None:
        if self._watch is not None:
            self._watch.stop()
        if self._tracker is not None:
            self._tracker.finished(self)

    def on_finish(self) -> None:
        self._untrack()
        if self.metrics is not None:
            self.metrics.requests_in_flight.dec()
            self.metrics.count_request(self.request.method, self.get_status())
            self.metrics.publish()

    def on_connection_close(self) -> None:
        if self._tracker is not None:
            self._tracker.abandoned(self)
        super().on_connection_close()
        self.client_gone()

    def abort_work(self) -> None:
        """Override point: stops what the request started outside its own task (an upload's
        storage write). Runs once, when the client has left, before the request ends."""

    def client_gone(self) -> None:
        """The client left (seen by Tornado or by the :class:`DisconnectWatch`): ends the
        request now, as 499, and cancels what it awaits (a storage lookup, a read), which then
        cleans up as on any other failure. Idempotent."""
        if not self._gone:
            self._gone = True
            if self._watch is not None:
                self._watch.stop()
            self.abort_work()
        if self._finished:
            return
        task = self._task
        current = asyncio.current_task()
        if getattr(self, "_dropping", False) and task is not None and task is not current:
            return  # we dropped the client: the handler's own task sees it and calls again
        stream = getattr(self.request.connection, "stream", None)
        if stream is not None and not stream.closed():
            stream.close()
        tornado.web.RequestHandler.on_connection_close(self)  # fails a pending body read
        self._write_buffer = []
        self.set_status(CLIENT_CLOSED, reason="Client Closed Request")
        with contextlib.suppress(Exception):
            self.finish()
        if task is not None and not task.done() and task is not current:
            task.cancel()

    def set_default_headers(self) -> None:
        allowed = self.settings.get("gridserve_cors_origin")
        if not allowed:
            return
        origin = self.request.headers.get("Origin")
        if allowed == "*":
            self.set_header("Access-Control-Allow-Origin", "*")
        else:
            self.add_header("Vary", "Origin")
            if origin and origin in [o.strip() for o in allowed.split(",")]:
                self.set_header("Access-Control-Allow-Origin", origin)
        self.set_header("Access-Control-Expose-Headers", self.CORS_EXPOSE)

    async def options(self, *args: Any) -> None:
        """CORS preflight (and a plain OPTIONS): 204 with what may be asked."""
        methods = ", ".join(self.SUPPORTED_METHODS)
        self.set_header("Allow", methods)
        if self.settings.get("gridserve_cors_origin"):
            self.set_header("Access-Control-Allow-Methods", methods)
            self.set_header("Access-Control-Allow-Headers", self.CORS_ALLOW_HEADERS)
            self.set_header("Access-Control-Max-Age", "86400")
        self.set_status(204)

    def storage_http_error(self, exc: Exception) -> tornado.web.HTTPError:
        """The client-facing error for a storage error raised before the response started."""
        if isinstance(exc, FileNotFound):
            return tornado.web.HTTPError(404)
        if isinstance(exc, InvalidKey):
            return tornado.web.HTTPError(400, reason="Invalid key")
        if isinstance(exc, StorageUnavailable):
            log.warning("storage unavailable: %s", exc)
            return tornado.web.HTTPError(503, reason="Storage unavailable")
        if isinstance(exc, InsufficientStorage):  # a write refused (tus creation): no retry
            log.warning("storage full: %.300s", exc)
            return tornado.web.HTTPError(507, reason="Insufficient Storage")
        raise exc


class GridFSHandler(StorageRequestHandler, tornado.web.StaticFileHandler):
    """Serves files of a :class:`~gridserve.storage.base.Storage` with full HTTP semantics of
    validators, conditional and range requests (see the module docstring)."""

    SUPPORTED_METHODS: tuple[str, ...] = ("GET", "HEAD", "OPTIONS")

    storage: Storage
    file_info: FileInfo

    def initialize(  # type: ignore[override]
        self,
        storage: Storage,
        cache_time: int = 0,
        max_ranges: int = ranges.DEFAULT_MAX_RANGES,
        acl: ACL | None = None,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        send_buffer: int | None = DEFAULT_SEND_BUFFER,
    ) -> None:
        super().initialize()
        self.send_buffer = send_buffer
        self.storage = storage
        self.cache_time = cache_time
        self.max_ranges = max_ranges
        self.send_timeout = send_timeout
        self.acl: ACL = acl or AllowReads()
        self.root = ""
        self.default_filename = None

    # -- lookup --------------------------------------------------------------------------

    def resolve_file(self, key: str, revision: int | None) -> Awaitable[FileInfo]:
        """Override point: the file for ``key`` (URL-decoded) and ``?rev=``."""
        return self.storage.resolve(key, revision)

    async def prepare(self) -> None:
        if self.request.method == "OPTIONS":
            return
        key = self.path_args[0] if self.path_args else ""
        revision = parse_revision(self.get_query_argument("rev", None))
        if not key:
            raise tornado.web.HTTPError(404)
        try:
            if self.metrics is None:
                self.file_info = await self.resolve_file(key, revision)
            else:
                with self.metrics.timed("resolve"):
                    self.file_info = await self.resolve_file(key, revision)
        except (FileNotFound, InvalidKey) as exc:
            # The policy decides a miss too: whom it refuses learns nothing of what exists.
            await self.authorize(self.lookup_action(), key)
            raise self.storage_http_error(exc) from None
        except StorageUnavailable as exc:
            raise self.storage_http_error(exc) from None
        await self.authorize_read()

    def lookup_action(self) -> Action:
        """The ACL action of a request that looks a file up (``read``)."""
        return "read"

    async def authorize_read(self) -> None:
        """Runs the ACL for the resolved file (action :meth:`lookup_action`)."""
        await self.authorize(self.lookup_action(), self.file_info)

    async def authorize(self, action: Action, target: Any) -> None:
        """Raises 401 (no credentials given) or 403 unless the ACL allows ``action``, or the
        status and reason of a :class:`~gridserve.acl.Refused` the ACL raised."""
        try:
            if await is_allowed(self.acl, self.request, action, target):
                return
        except Refused as exc:
            raise tornado.web.HTTPError(exc.status, reason=exc.reason) from None
        if has_credentials(self.request):
            raise tornado.web.HTTPError(403)
        raise tornado.web.HTTPError(401)

    # -- StaticFileHandler's synchronous hooks, answered from the resolved FileInfo ---------

    def compute_etag(self) -> str | None:
        info: FileInfo | None = getattr(self, "file_info", None)
        return str(info.etag) if info is not None else None

    def get_modified_time(self) -> datetime | None:
        return self.file_info.last_modified

    def get_content_size(self) -> int:
        return self.file_info.length

    def get_content_type(self) -> str:
        return choose_content_type(self.file_info.content_type, self.file_info.filename)

    def get_cache_time(self, path: str, modified: datetime | None, mime_type: str) -> int:
        return self.cache_time

    def shared_cacheable(self) -> bool:
        """Override point: may a shared cache serve this answer to other clients?"""
        return not has_credentials(self.request) and "exp" not in self.request.query_arguments

    # -- GET / HEAD ----------------------------------------------------------------------

    async def get(self, path: str, include_body: bool = True) -> None:
        info = self.file_info
        etag = validators.parse_etag(self.compute_etag()) or info.etag
        modified = self.get_modified_time() or info.last_modified

        self.set_header("Accept-Ranges", "bytes")
        self.set_header("ETag", str(etag))
        self.set_header("Last-Modified", _http_date(modified))
        content_type = self.get_content_type()
        cache_time = self.get_cache_time(path, modified, content_type)
        private = not self.shared_cacheable()
        if cache_time > 0 or private:
            directives = (["private"] if private else []) + (
                [f"max-age={cache_time}"] if cache_time > 0 else []
            )
            self.set_header("Cache-Control", ", ".join(directives))

        decision = validators.evaluate_preconditions(
            self.request.method or "GET", self.request.headers, etag, modified
        )
        if decision is validators.Precondition.NOT_MODIFIED:
            self.set_status(304)
            return
        if decision is validators.Precondition.FAILED:
            raise tornado.web.HTTPError(412)

        self.set_header("Content-Type", content_type)
        self.set_header("X-Content-Type-Options", "nosniff")
        download = self.get_query_argument("download", "") not in ("", "0", "false")
        self.set_header(
            "Content-Disposition", content_disposition(info.filename, attachment=download)
        )
        if not is_passive(content_type):
            # A stored HTML or SVG opened from our origin must not run script there.
            self.set_header("Content-Security-Policy", "sandbox")
        self.set_extra_headers(path)
        if await self.redirect_to_s3(content_type):
            return

        specs = ranges.parse_range_header(self.request.headers.get("Range"))
        if specs is not None and not validators.if_range_allows_partial(
            self.request.headers.get("If-Range"), etag, modified
        ):
            specs = None
        plan = ranges.resolve_ranges(specs, info.length, max_ranges=self.max_ranges)
        if specs is not None and self.metrics is not None:
            kind = {ranges.RangeOutcome.UNSATISFIABLE: "unsatisfiable"}.get(plan.outcome)
            kind = kind or ("multi" if len(plan.ranges) > 1 else "single")
            self.metrics.range_requests.labels(kind).inc()

        if plan.outcome is ranges.RangeOutcome.UNSATISFIABLE:
            raise HTTPErrorWithHeaders(
                416,
                {
                    "Content-Range": ranges.unsatisfied_content_range(info.length),
                    "Accept-Ranges": "bytes",
                },
            )
        if len(plan.ranges) <= 1 and self.hand_off():
            return  # nginx sends the bytes (and this plan's range) from here on
        if plan.outcome is ranges.RangeOutcome.FULL:
            self.set_header("Content-Length", info.length)
            if include_body:
                await self._send_parts([(b"", ranges.ByteRange(0, info.length - 1))], b"")
            return
        self.set_status(206)
        if len(plan.ranges) == 1:
            (only,) = plan.ranges
            self.set_header("Content-Range", only.content_range(info.length))
            self.set_header("Content-Length", only.size)
            if include_body:
                await self._send_parts([(b"", only)], b"")
            return
        # A boundary that is a function of the file and the ranges: HEAD and GET announce the
        # same Content-Type, and no stored content can be crafted to contain it.
        boundary = hashlib.sha256(f"{etag}|{plan.ranges}".encode()).hexdigest()[:32]
        multipart = ranges.plan_multipart(plan.ranges, info.length, content_type, boundary)
        self.set_header("Content-Type", multipart.content_type)
        self.set_header("Content-Length", multipart.content_length)
        if include_body:
            await self._send_parts(
                list(zip(multipart.part_headers, multipart.ranges, strict=True)),
                multipart.closing,
            )

    def hand_off(self) -> bool:
        """With ``--accel-redirect`` (application setting ``gridserve_accel_redirect``),
        answers a local file with ``X-Accel-Redirect`` and no body, so nginx sends the bytes
        (see :mod:`gridserve.handoff`); False when gridserve serves the request itself."""
        prefix = self.settings.get("gridserve_accel_redirect")
        if not prefix or handoff.wants_direct(self.request.headers, self.max_ranges):
            return False
        target = handoff.accel_path(self.storage, self.file_info, prefix)
        if target is None:
            return False
        self.set_header("X-Accel-Redirect", target)
        return True

    async def redirect_to_s3(self, content_type: str) -> bool:
        """With ``--s3-redirect SECONDS`` (setting ``gridserve_s3_redirect``), answers a read
        of an S3 object with a 307 to a presigned URL that never outlives the request's own
        signature; never for types served sandboxed. False when gridserve serves it."""
        ttl = self.settings.get("gridserve_s3_redirect")
        s3 = handoff.s3_storage_of(self.storage) if ttl else None
        if s3 is None or not ttl or not is_passive(content_type):
            return False
        expires_in = handoff.presign_ttl(int(ttl), signed_expiry(self.request), time.time())
        disposition = self._headers.get("Content-Disposition", "inline")
        try:
            url = await s3.presigned_get_url(self.file_info, expires_in, content_type, disposition)
        except (FileNotFound, InvalidKey, StorageUnavailable) as exc:
            raise self.storage_http_error(exc) from None
        for name in ("ETag", "Last-Modified", "Accept-Ranges", "Content-Disposition"):
            self.clear_header(name)
        self.set_header("Cache-Control", "no-store")
        self.set_status(307)
        self.set_header("Location", url)
        return True

    async def _send_parts(
        self, parts: list[tuple[bytes, ranges.ByteRange]], closing: bytes
    ) -> None:
        """Streams each (framing, range) pair, then ``closing``, awaiting flush per chunk.

        The headers go out with the first chunk: a storage error before it (the file deleted
        since it was resolved, the database gone) still gets a status (404, 503, 500); after
        it, a failure can only abort the connection.
        """
        if self.send_buffer:
            # What the kernel queues beyond what the player took is thrown away when it seeks.
            sock = getattr(getattr(self.request.connection, "stream", None), "socket", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)
        info = self.file_info
        sent = 0
        unyielded = 0
        metrics = self.metrics
        if metrics is not None:
            metrics.streams_in_flight.inc()
            count_read = metrics.storage_read_counter(self.storage)
        loop = asyncio.get_running_loop()
        self._flush_started: float | None = None
        self._stalled = False
        self._stall_timer = loop.call_later(self.send_timeout, self._check_stall)
        try:
            for framing, byte_range in parts:
                if framing:
                    self.write(framing)
                if byte_range.size <= 0:
                    continue
                async with aclosing(
                    self.storage.read_buffers(info, byte_range.start, byte_range.end + 1)
                ) as replies:
                    async for pieces in replies:
                        size = sum(map(len, pieces))
                        if metrics is not None:
                            count_read(size)
                        # What the access line says should the client leave meanwhile (it
                        # is logged before this task ends): not the Content-Length.
                        self.bytes_sent = sent
                        await self._send_pieces(pieces)
                        sent += size
                        unyielded += size
                        if unyielded >= YIELD_EVERY:
                            # A fast client never makes flush() wait: let others run too.
                            unyielded = 0
                            await asyncio.sleep(0)
            if closing:
                self.write(closing)
                await self._timed_flush()
        except StreamClosedError:
            self.client_gone()
            if self._stalled:
                log.info(
                    "dropped a client that read nothing for %gs, after %d bytes of %s",
                    self.send_timeout,
                    sent,
                    info.filename,
                )
            else:
                log.debug("client went away after %d bytes of %s", sent, info.filename)
        except (CorruptFile, StorageUnavailable, FileNotFound) as exc:
            if not self._headers_written:
                self._fail_before_body(exc)
            else:
                # Deleted under the reader is routine (migrations, fallbacks): not an error.
                level = logging.INFO if isinstance(exc, FileNotFound) else logging.ERROR
                log.log(level, "aborted %s after %d bytes: %s", info.filename, sent, exc)
                self._abort_connection()
        finally:
            self._stall_timer.cancel()
            self.bytes_sent = sent
            if metrics is not None:
                metrics.streams_in_flight.dec()
                metrics.sent_bytes.inc(sent)

    async def _send_pieces(self, pieces: list[bytes | memoryview]) -> None:
        """Writes ``pieces`` (bytes, or memoryviews of a storage's reply) and waits until the
        socket took them (one flush for them all). Once the headers are out, pieces go to the
        connection as they are: no copy, no join (``RequestHandler.write`` takes only bytes
        and ``flush`` joins what was written). An application's output transforms (gzip) get
        what ``write`` and ``flush`` give them."""
        if not self._headers_written or self._transforms:
            for piece in pieces:
                self.write(piece if isinstance(piece, bytes) else bytes(piece))
            await self._timed_flush()
            return
        if self._finished:
            raise StreamClosedError()
        connection = self.request.connection
        assert connection is not None
        done: Awaitable[None] | None = None
        if self._write_buffer:
            done = self.flush()  # what was written before (a multipart's framing), in order
        for piece in pieces:
            done = connection.write(piece)  # type: ignore[arg-type]
        if done is not None:
            await self._watched(done)

    def _fail_before_body(self, exc: Exception) -> None:
        """Answers a storage error met before any byte of the response was sent."""
        stream = getattr(self.request.connection, "stream", None)
        if stream is not None and stream.closed():
            log.debug("client went away before %s could be read: %s", self.file_info.filename, exc)
            return
        if isinstance(exc, CorruptFile):
            log.error("cannot serve %s: %s", self.file_info.filename, exc)
            self.send_error(500)
        else:
            http_error = self.storage_http_error(exc)
            self.send_error(http_error.status_code, reason=http_error.reason)

    async def _timed_flush(self) -> None:
        """``flush()``, watched by :meth:`_check_stall` (Tornado has no write timeout)."""
        await self._watched(self.flush())

    async def _watched(self, write: Awaitable[None]) -> None:
        """Waits for ``write`` to reach the socket, watched by :meth:`_check_stall`."""
        self._flush_started = asyncio.get_running_loop().time()
        await write
        self._flush_started = None

    def _check_stall(self) -> None:
        """Runs every ``send_timeout``: a flush pending that long means the client takes no
        data; reset the connection (the pending flush then raises StreamClosedError). One timer
        per response, instead of a timeout around every flush."""
        loop = asyncio.get_running_loop()
        started = self._flush_started
        waited = 0.0 if started is None else loop.time() - started
        if waited >= self.send_timeout:
            self._stalled = True
            self._abort_connection(reset=True)
            return
        self._stall_timer = loop.call_later(self.send_timeout - waited, self._check_stall)

    def _abort_connection(self, reset: bool = False) -> None:
        """Closes the connection mid-body, so the client sees a truncated response, never a
        complete-looking wrong one. ``reset`` sends a TCP RST, so the kernel drops what is
        still queued for a client that stopped reading instead of holding it for that client.
        """
        if self._watch is not None:
            self._watch.stop()
        self._dropping = True  # the handler's own task sees the close: client_gone() lets it be
        stream = getattr(self.request.connection, "stream", None)
        if stream is not None:
            sock = getattr(stream, "socket", None)
            if reset and sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            stream.close()
        self._write_buffer = []
