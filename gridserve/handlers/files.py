r"""Reading, writing, deleting and listing files: :class:`FilesHandler`, what ``make_app`` mounts.

``GET|HEAD {prefix}/<key>``
    stream a file (:class:`~gridserve.handlers.stream.GridFSHandler`).
``GET {prefix}/`` or ``{prefix}/<dir>/``
    JSON listing: ``{"files": [...], "next": CURSOR|null}``; query ``prefix`` (default: the
    path after ``{prefix}/``; a signed listing's must lie within that path), ``limit`` (1-1000,
    default 100), ``after`` (a ``next`` cursor).
``PUT {prefix}/<name>``
    store the raw request body as ``name``. ``?max-size=N`` caps this upload at N bytes (what a
    signed scoped upload URL carries, see :mod:`gridserve.acl`).
``POST {prefix}/`` or ``{prefix}/<dir>/``
    store each ``file`` field of a ``multipart/form-data`` body as ``<dir>/<its filename>``.
``DELETE {prefix}/<name>``, ``DELETE {prefix}/<name>?rev=N``, ``DELETE {prefix}/<id>``
    delete every revision of the name (as mongofiles does), or only revision N, or only the
    file with that id: 200 ``{"deleted": [{id, filename, length, ...}, ...]}``, oldest first.

Bodies stream into the storage as they arrive (``stream_request_body``; ``data_received``
awaits a small bounded hand-over, so Tornado reads no faster than the storage writes). An
upload answers 201 with ``Location`` and ``{id, filename, length, contentType, md5, sha256,
uploadDate, url}`` (a list under ``files`` for POST). Each is checked against the handler's
:class:`~gridserve.uploads.UploadPolicy` (400 bad name, 409 name exists, 413 too large, from
``Content-Length`` before reading and mid-stream otherwise, 415 type not allowed) and the ACL
(401/403; 403 with the ACL's reason when it raises :class:`~gridserve.acl.Refused`). Reads
and deletes ask the ACL on a miss too (``target``: the requested name), so whom it refuses
cannot tell what exists. A rejected or interrupted upload leaves nothing behind.

Options, beyond :class:`GridFSHandler`'s: ``acl`` (see :mod:`gridserve.acl`; default
:class:`~gridserve.acl.AllowReads`, which refuses all writes), ``upload_policy``, ``prefix``
(the URL prefix, for ``Location`` and ``url``), ``signing_key`` (sign listed ``url``\ s for
an hour, never longer than the signed request that lists them; of several keys, the first),
``media`` (a :class:`~gridserve.media.service.MediaService`: facts and posters after each upload,
``--faststart``; ``GET {prefix}/<key>?poster=small|large`` serves a poster, see
:mod:`gridserve.handlers.media`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from asyncio import Future
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import tornado.web

from gridserve.acl import (
    ACL,
    Action,
    SigningKeys,
    sign_path,
    signed_expiry,
    upload_size_limit,
)
from gridserve.handlers.media import add_media_facts, send_poster
from gridserve.handlers.stream import DEFAULT_SEND_BUFFER, DEFAULT_SEND_TIMEOUT, GridFSHandler
from gridserve.media.service import MediaService
from gridserve.mediatypes import choose_content_type
from gridserve.multipart import MultipartError, MultipartReader
from gridserve.storage.base import (
    FileInfo,
    FileNotFound,
    InsufficientStorage,
    InvalidKey,
    Storage,
    StorageUnavailable,
)
from gridserve.uploads import (
    SNIFF_BYTES,
    Rejected,
    UploadPolicy,
    decide_content_type,
    renamed,
    sanitize_folder,
    sanitize_name,
    sniff,
)

log = logging.getLogger("gridserve.files")

MAX_LIST_LIMIT = 1000
# Listings of one application at once, whatever the storage: each is O(limit), and a burst of
# them waits here instead of piling up queries on the database or scans on the disk.
MAX_CONCURRENT_LISTINGS = 8
LISTED_URL_TTL = 3600
HANDOVER_CHUNKS = 4
UNLIMITED_BODY = 1 << 50
DEFAULT_LINGER_SECONDS = 10.0
DEFAULT_LINGER_BYTES = 32 * 1024 * 1024


def describe_file(info: FileInfo, url_prefix: str = "/fs") -> dict[str, Any]:
    """The JSON description of a stored file: what uploads answer, listings and the CLI print.
    ``contentType`` is what the file is served as (stored, else by extension)."""
    return {
        "id": str(info.id),
        "filename": info.filename,
        "length": info.length,
        "contentType": choose_content_type(info.content_type, info.filename),
        "md5": info.md5,
        "sha256": info.metadata.get("sha256"),
        "uploadDate": info.upload_date.isoformat(),
        "url": f"{url_prefix.rstrip('/')}/{quote(str(info.id), safe='/')}",
        "media": info.metadata.get("media"),
    }


def handed_out_url(signing_key: SigningKeys | None, request: Any, url: str) -> str:
    """A file ``url`` as an answer to ``request`` hands it out: signed for an hour with
    ``signing_key`` (unchanged without one), never longer than the request's own signature
    (a signed request hands out nothing that outlives it)."""
    if not signing_key:
        return url
    expires = int(time.time()) + LISTED_URL_TTL
    signed_until = signed_expiry(request)
    if signed_until is not None:
        expires = min(expires, signed_until)
    return sign_path(signing_key, url, expires=expires)


def upload_failure_answer(exc: BaseException, logger: logging.Logger) -> tuple[int, str] | None:
    """The status and reason for an upload (``PUT``, ``POST``, a tus ``PATCH``) that failed with
    ``exc``, for what every upload path shares: a policy refusal, a bad name, a full or gone
    storage (logged on ``logger``, the error's text cut to 300 characters: a driver's write
    error can carry the bytes), a client gone (499). None for a failure that is a bug (500)."""
    if isinstance(exc, Rejected):
        return exc.status, exc.reason
    if isinstance(exc, InvalidKey):
        return 400, str(exc)
    if isinstance(exc, InsufficientStorage):
        logger.warning("upload refused, storage full: %.300s", exc)
        return 507, "Insufficient Storage"
    if isinstance(exc, StorageUnavailable):
        logger.warning("upload failed, storage unavailable: %.300s", exc)
        return 503, "Storage unavailable"
    if isinstance(exc, UploadAborted):
        return 499, str(exc)
    return None


class UploadAborted(Exception):
    """The body of an upload stops here: the client left, or the upload was refused."""


class BodyChannel:
    """A bounded hand-over of body chunks from ``data_received`` to a storage's ``save``.

    ``None`` marks the end. :meth:`abort` ends it early: the consumer's iterator raises
    :class:`UploadAborted` at its next chunk, so a storage write in progress completes and the
    storage's own failure path removes what was written. Once the consumer gives up
    (:meth:`close`) or the channel is aborted, producers no longer block and their chunks are
    dropped.
    """

    def __init__(self, max_chunks: int = HANDOVER_CHUNKS) -> None:
        self._queue: asyncio.Queue[bytes | UploadAborted | None] = asyncio.Queue(max_chunks)
        self._closed = False
        self._cut: UploadAborted | None = None

    async def put(self, chunk: bytes | None) -> None:
        if not self._closed:
            await self._queue.put(chunk)

    def close(self) -> None:
        self._closed = True
        while not self._queue.empty():  # frees a producer blocked on a full queue
            self._queue.get_nowait()

    def abort(self, reason: str) -> None:
        self.close()
        self._queue.put_nowait(UploadAborted(reason))  # room: the queue was just emptied

    def cut(self, reason: str) -> None:
        """Ends the body *after* the chunks already handed over (unlike :meth:`abort`): the
        consumer gets them, then :class:`UploadAborted`. For a resumable upload, whose
        storage keeps every byte received when the client goes away."""
        self._cut = UploadAborted(reason)
        if not self._queue.full():
            self._queue.put_nowait(self._cut)

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            if self._cut is not None and self._queue.empty():
                raise self._cut
            chunk = await self._queue.get()
            if chunk is None:
                return
            if isinstance(chunk, UploadAborted):
                raise chunk
            yield chunk


async def _prepend(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if head:
        yield head
    async for chunk in rest:
        yield chunk


@tornado.web.stream_request_body
class FilesHandler(GridFSHandler):
    """Files of a storage: read, list, upload, delete (see the module docstring)."""

    SUPPORTED_METHODS: tuple[str, ...] = ("GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS")

    def initialize(  # type: ignore[override]
        self,
        storage: Any,
        cache_time: int = 0,
        max_ranges: int = 16,
        acl: ACL | None = None,
        upload_policy: UploadPolicy | None = None,
        prefix: str = "/fs",
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        signing_key: SigningKeys | None = None,
        send_buffer: int | None = DEFAULT_SEND_BUFFER,
        linger_seconds: float = DEFAULT_LINGER_SECONDS,
        linger_bytes: int = DEFAULT_LINGER_BYTES,
        media: MediaService | None = None,
    ) -> None:
        super().initialize(
            storage,
            cache_time=cache_time,
            max_ranges=max_ranges,
            acl=acl,
            send_timeout=send_timeout,
            send_buffer=send_buffer,
        )
        self.upload_policy = upload_policy or UploadPolicy()
        self.url_prefix = prefix.rstrip("/")
        self.signing_key = signing_key
        self.media = media
        self._channel: BodyChannel | None = None
        self._upload: asyncio.Future[Any] | None = None
        self._multipart: MultipartReader | None = None
        self._received = 0
        self.linger_seconds = linger_seconds
        self.linger_bytes = linger_bytes
        self._linger: asyncio.Future[None] | None = None  # the refusal, while its body drains
        self._linger_timer: asyncio.TimerHandle | None = None
        self._linger_left = 0

    # -- dispatch ------------------------------------------------------------------------

    async def prepare(self) -> None:
        key = self.path_args[0] if self.path_args else ""
        method = self.request.method
        if method == "OPTIONS":
            return
        if method in ("GET", "HEAD"):
            if key == "" or key.endswith("/"):
                await self._authorize_list(key)
                return
            await super().prepare()
            return
        if method == "DELETE":
            await super().prepare()  # resolves; asks the ACL for "delete" (lookup_action)
            return
        try:
            if method == "PUT":
                await self._start_put(key)
            else:
                await self._start_post(key)
        except Rejected as exc:
            raise tornado.web.HTTPError(exc.status, reason=exc.reason) from None

    def lookup_action(self) -> Action:
        return "delete" if self.request.method == "DELETE" else "read"

    def _limit_to_signed_size(self) -> None:
        """A scoped upload URL (``max-size=N``, signed) caps this request's upload at N bytes
        (and the server's own limit still applies). Runs once the ACL allowed the write."""
        try:
            signed_limit = upload_size_limit(self.request)
        except ValueError as exc:
            raise tornado.web.HTTPError(400, reason=str(exc)) from None
        if signed_limit is None:
            return
        limit = self.upload_policy.max_size
        limit = signed_limit if limit is None else min(limit, signed_limit)
        self.upload_policy = dataclasses.replace(self.upload_policy, max_size=limit)
        self._check_declared_size()

    # -- listing -------------------------------------------------------------------------

    async def _authorize_list(self, directory: str) -> None:
        """Asks the ACL for ``list`` of the effective prefix. A signed listing never reaches
        outside the signed path: its ``prefix`` parameter must lie within that directory."""
        prefix = self.get_query_argument("prefix", directory)
        if "sig" in self.request.query_arguments and not prefix.startswith(directory):
            raise tornado.web.HTTPError(403, reason="A signed listing stays within its path")
        await self.authorize("list", prefix)

    async def get(self, path: str, include_body: bool = True) -> None:
        if path == "" or path.endswith("/"):
            await self._list(path)
            return
        if self.get_query_argument("poster", None) is not None:
            await send_poster(self, self.storage, self.file_info, include_body)
            return
        await super().get(path, include_body)

    async def _list(self, path: str) -> None:
        prefix = self.get_query_argument("prefix", path)
        after = self.get_query_argument("after", "")
        try:
            limit = int(self.get_query_argument("limit", "100"))
        except ValueError:
            raise tornado.web.HTTPError(400, reason="Invalid limit") from None
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise tornado.web.HTTPError(400, reason=f"limit must be 1 to {MAX_LIST_LIMIT}")
        try:
            async with self._listing_slots():
                infos = [info async for info in self.storage.list(prefix, limit + 1, after=after)]
                files = [self.describe(info) for info in infos]
                await add_media_facts(self.storage, infos, files, self.url_prefix, self.sign_url)
        except StorageUnavailable as exc:
            raise self.storage_http_error(exc) from None
        more = len(files) > limit
        files = files[:limit]
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"files": files, "next": files[-1]["filename"] if more else None}))

    def _listing_slots(self) -> asyncio.Semaphore:
        """The application's bound on concurrent listings (:data:`MAX_CONCURRENT_LISTINGS`)."""
        slots: asyncio.Semaphore | None = getattr(self.application, "_gridserve_listings", None)
        if slots is None:
            slots = asyncio.Semaphore(MAX_CONCURRENT_LISTINGS)
            self.application._gridserve_listings = slots  # type: ignore[attr-defined]
        return slots

    def describe(self, info: FileInfo) -> dict[str, Any]:
        """The JSON description of a stored file (listings and upload answers); its ``url`` is
        signed for an hour when the handler has a signing key, and never longer than the signature
        of the request itself (a signed listing hands out nothing that outlives it)."""
        described = describe_file(info, self.url_prefix)
        described["url"] = self.sign_url(described["url"])
        return described

    def sign_url(self, url: str) -> str:
        """``url`` signed as :meth:`describe` signs (unchanged without a signing key)."""
        return handed_out_url(self.signing_key, self.request, url)

    # -- delete --------------------------------------------------------------------------

    async def delete(self, path: str) -> None:
        try:
            doomed = await doomed_files(
                self.storage, path, self.file_info, self.get_query_argument("rev", None)
            )
            for info in doomed:
                with contextlib.suppress(FileNotFound):  # a concurrent delete got it first
                    await self.storage.delete(info)
        except (FileNotFound, InvalidKey, StorageUnavailable) as exc:
            raise self.storage_http_error(exc) from None
        self.set_header("Content-Type", "application/json; charset=utf-8")
        deleted = [describe_file(info, self.url_prefix) for info in doomed]
        self.finish(json.dumps({"deleted": deleted}))

    # -- uploads -------------------------------------------------------------------------
    #
    # Refusals decided from the headers come first, in a fixed order, before any byte of the
    # body is read (and before ``100 Continue``, which Tornado sends only once prepare() has
    # returned): 400 bad name, 401/403 the ACL's write decision, 413 declared size, 409 the
    # name exists (policy ``reject``), 415 the extension is refused whatever the content.
    # Authorisation first, so a stranger learns nothing about names from a 409. A refusal
    # while the body is still coming lingers (:meth:`finish`).

    def _check_declared_size(self) -> None:
        connection = self.request.connection
        if connection is not None and hasattr(connection, "set_max_body_size"):
            # Tornado's own cap (100 MB by default) is for buffered bodies. Ours is the policy,
            # counted in data_received: Tornado's would answer 400 before we could say 413.
            connection.set_max_body_size(UNLIMITED_BODY)
        declared = self.request.headers.get("Content-Length")
        if declared is not None and declared.isdigit():
            self.upload_policy.check_size(int(declared))

    async def _start_put(self, key: str) -> None:
        name = sanitize_name(key)
        await self.authorize("write", name)
        self._limit_to_signed_size()
        self._check_declared_size()
        if self.upload_policy.on_conflict == "reject" and await self._exists(name):
            raise Rejected(409, f"{name} exists")
        self.upload_policy.check_name(name)
        declared = self.request.headers.get("Content-Type")
        channel = self._channel = BodyChannel()
        self._begin_upload(self._store(name, declared, channel.chunks()))

    async def _start_post(self, key: str) -> None:
        directory = sanitize_folder(key)
        await self.authorize("write", directory)
        self._check_declared_size()
        try:
            self._multipart = MultipartReader(self.request.headers.get("Content-Type", ""))
        except MultipartError as exc:
            raise Rejected(400, str(exc)) from None
        self._begin_upload(self._store_parts(directory, self._multipart))

    def _begin_upload(self, work: Any) -> None:
        self._upload = asyncio.ensure_future(work)
        if self._tracker is not None:  # the upload may outlive its request (its cleanup)
            memory = self._tracker.memory
            memory.hold()
            self._upload.add_done_callback(lambda _: memory.release())
        metrics = self.metrics
        if metrics is not None:
            metrics.uploads_in_flight.inc()
            self._upload.add_done_callback(lambda _: metrics.uploads_in_flight.dec())
        self._upload.add_done_callback(self._upload_ended)

    def _upload_ended(self, upload: asyncio.Future[Any]) -> None:
        """A refusal found while the body is still arriving (415 from the sniffed type, 507,
        503) is answered now, not after the rest of the body: it then lingers, bounded."""
        if upload.cancelled():
            return
        failure = upload.exception()  # retrieved even when nobody awaits it any more
        body: Future[None] | None = getattr(self.request, "_body_future", None)
        if failure is None or self._finished or self._linger is not None:
            return
        if body is None or body.done():
            return  # put()/post() awaits it and answers
        answer = self._failure_answer(failure)
        if answer is not None:
            self._abort_upload(answer[1])
            self.send_error(answer[0], reason=answer[1])

    async def data_received(self, chunk: bytes) -> None:
        if self._linger is not None:
            self._linger_left -= len(chunk)
            if self._linger_left < 0:
                self._end_linger()
            return
        if self._upload is None or self._upload.done():
            return  # already failed; its answer is on the way
        self._received += len(chunk)
        if self.metrics is not None:
            self.metrics.upload_bytes.inc(len(chunk))
        try:
            self.upload_policy.check_size(self._received)
        except Rejected as exc:
            self._abort_upload(exc.reason)
            self.send_error(exc.status, reason=exc.reason)
            return
        if self._channel is not None:
            await self._channel.put(chunk)
        elif self._multipart is not None:
            await self._multipart.feed(chunk)

    def _abort_upload(self, reason: str) -> None:
        """Ends the upload early. A PUT's body iterator raises, so the storage finishes the
        write in progress and then removes everything (a cancellation could not know what a
        write already sent did); a form upload is cancelled (the storages settle their writes).
        """
        if self._channel is not None:
            self._channel.abort(reason)
        elif self._upload is not None and not self._upload.done():
            self._upload.cancel()
        if self._multipart is not None:
            self._multipart.close()

    def abort_work(self) -> None:
        self._abort_upload("the client went away")  # nothing may be left behind

    def client_gone(self) -> None:
        if self._linger is not None and not self._finished:
            self._gone = True
            self._abort_upload("the client went away")
            self._end_linger()  # it may have read the refusal: logged as what it was sent
            return
        super().client_gone()

    # -- lingering refusals ----------------------------------------------------------------

    def finish(self, chunk: str | bytes | dict[Any, Any] | None = None) -> Future[None]:
        """Finishes the response; a refusal of a body still arriving *lingers*: the answer is
        sent at once, then the body is read and discarded for up to ``linger_seconds`` and
        ``linger_bytes`` before the request ends (closing the connection if the body was not
        all read), as nginx's lingering close. Closing while the client still sends would make
        the kernel reset the connection, and a client that writes its whole body before
        reading (``requests``, browsers) would see the reset instead of the answer. A client
        that asked ``Expect: 100-continue`` and was refused before ``100 Continue`` sent no
        body: no lingering."""
        if self._linger is not None:
            return self._linger  # the refusal is out; _end_linger finishes
        if not self._should_linger():
            return super().finish(chunk)
        if chunk is not None:
            self.write(chunk)
        if not self._headers_written:
            self.set_header("Content-Length", sum(len(part) for part in self._write_buffer))
            self.set_header("Connection", "close")
        sent = self.flush()
        linger: Future[None] = asyncio.get_running_loop().create_future()
        self._linger = linger
        self._linger_left = self.linger_bytes
        self._linger_timer = asyncio.get_running_loop().call_later(
            self.linger_seconds, self._end_linger
        )
        body: Future[None] = self.request._body_future
        body.add_done_callback(lambda _: self._end_linger())
        sent.add_done_callback(lambda f: f.cancelled() or f.exception())
        return linger

    def _should_linger(self) -> bool:
        if self.request.method not in ("PUT", "POST") or self._gone:
            return False
        if self.get_status() < 400 or self.linger_seconds <= 0 or self.linger_bytes <= 0:
            return False
        body: Future[None] | None = getattr(self.request, "_body_future", None)
        if body is None or body.done():
            return False
        headers = self.request.headers
        declared = headers.get("Content-Length", "")
        chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        if not chunked and not (declared.isdigit() and int(declared) > self._received):
            return False
        prepared = self._prepared_future
        waiting_for_continue = headers.get("Expect", "").lower() == "100-continue" and (
            prepared is not None and not prepared.done()
        )
        return not waiting_for_continue

    def _end_linger(self) -> None:
        if self._linger is None or self._finished:
            return
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        linger = self._linger
        with contextlib.suppress(Exception):
            super().finish()
        if not linger.done():
            linger.set_result(None)

    # -- the upload's end ------------------------------------------------------------------

    async def put(self, path: str) -> None:
        if self._finished or self._linger or self._channel is None or self._upload is None:
            return
        await self._channel.put(None)
        info = await self._await_upload()
        if info is not None:
            self._created([info])

    async def post(self, path: str) -> None:
        if self._finished or self._linger or self._multipart is None or self._upload is None:
            return
        await self._multipart.finish()
        stored = await self._await_upload()
        if stored is not None:
            if not stored:
                raise tornado.web.HTTPError(400, reason="No file field in the form")
            self._created(stored)

    async def _await_upload(self) -> Any:
        assert self._upload is not None
        try:
            return await self._upload
        except Exception as exc:
            answer = self._failure_answer(exc)
            if answer is None:
                raise
            if not self._finished and self._linger is None:
                self.send_error(answer[0], reason=answer[1])
        return None

    @staticmethod
    def _failure_answer(exc: BaseException) -> tuple[int, str] | None:
        """The status and reason for an upload that failed with ``exc``; None for a failure
        that is a bug (a 500). An :class:`UploadAborted` upload was answered already."""
        if isinstance(exc, MultipartError):
            return 400, str(exc)
        return upload_failure_answer(exc, log)

    def _created(self, files: list[FileInfo]) -> None:
        described = [self.describe(info) for info in files]
        self.set_status(201)
        self.set_header("Location", described[0]["url"])
        self.set_header("Content-Type", "application/json; charset=utf-8")
        body = described[0] if self.request.method == "PUT" else {"files": described}
        self.finish(json.dumps(body))

    async def _store_parts(self, directory: str, reader: MultipartReader) -> list[FileInfo]:
        stored: list[FileInfo] = []
        try:
            async for part in reader.parts():
                if part.name != "file" or part.filename is None:
                    await part.skip()
                    continue
                name = sanitize_name(directory + sanitize_name(part.filename, basename_only=True))
                stored.append(await self._store(name, part.content_type, part.data()))
        except BaseException:
            reader.close()  # frees data_received if it waits for room: the answer can go out
            # All or nothing: a failure in a later file takes back the earlier ones.
            for info in stored:
                with contextlib.suppress(Exception):
                    await self.storage.delete(info)
            raise
        return stored

    async def _store(self, name: str, declared: str | None, body: AsyncIterator[bytes]) -> FileInfo:
        """Sniffs the first bytes, checks the type and the name, then saves the stream."""
        try:
            head = bytearray()
            async for chunk in body:
                head += chunk
                if len(head) >= SNIFF_BYTES:
                    break
            content_type = decide_content_type(declared, sniff(bytes(head)), name)
            self.upload_policy.check_type(name, content_type)
            name = await self._free_name(name)
            stream = _prepend(bytes(head), body)
            if self.media is not None:  # --faststart: stored moov-first
                stream = self.media.faststart_body(bytes(head), body)
            info = await self.storage.save(name, stream, content_type=content_type)
            if self.media is not None:
                self.media.submit(info)  # facts and posters, off the request path
            return info
        finally:
            if self._channel is not None:
                self._channel.close()

    async def _free_name(self, name: str) -> str:
        return await free_name(self.storage, self.upload_policy, name)

    async def _exists(self, name: str) -> bool:
        return await name_exists(self.storage, name)


async def name_exists(storage: Storage, name: str) -> bool:
    """Whether a file named ``name`` is stored."""
    try:
        await storage.resolve(name)
    except FileNotFound:
        return False
    return True


async def free_name(storage: Storage, policy: UploadPolicy, name: str) -> str:
    """The name an upload of ``name`` is stored under, by the policy's ``on_conflict``:
    ``name`` itself (``revision``, or free), 409 (``reject``), or the first free renamed copy
    (``rename``)."""
    if policy.on_conflict == "revision" or not await name_exists(storage, name):
        return name
    if policy.on_conflict == "reject":
        raise Rejected(409, f"{name} exists")
    for attempt in range(2, 1002):
        candidate = renamed(name, attempt)
        if not await name_exists(storage, candidate):
            return candidate
    raise Rejected(409, f"{name} exists, and so do 1000 renamed copies")


async def doomed_files(
    storage: Storage, key: str, resolved: FileInfo, revision: object
) -> list[FileInfo]:
    """What deleting ``key`` removes: the one file ``resolved`` when ``key`` is its id or a
    revision was asked for, else every revision of the name (``gridserve rm`` and
    ``DELETE``)."""
    if revision is not None or resolved.filename != key or str(resolved.id) == key:
        return [resolved]
    return await storage.revisions(key) or [resolved]
