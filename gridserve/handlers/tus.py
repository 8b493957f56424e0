r"""Resumable uploads over tus 1.0.0: :class:`TusHandler`, mounted by ``make_app`` at
``{prefix}/.uploads/`` (a hidden segment: no file can be named there, see
:mod:`gridserve.names`).

``POST {prefix}/.uploads/``
    creation (``Upload-Length`` or ``Upload-Defer-Length: 1``; ``Upload-Metadata`` with
    ``filename``, required, and ``filetype``), with an optional first body
    (creation-with-upload): 201, ``Location`` (the upload's URL), ``Upload-Offset``,
    ``Upload-Expires``; an upload complete at once (``Upload-Length: 0``, or the whole body)
    also ``Content-Location``, as below.
``HEAD {prefix}/.uploads/<id>``
    ``Upload-Offset``, ``Upload-Length`` (or ``Upload-Defer-Length: 1``), ``Upload-Metadata``,
    ``Upload-Expires``; ``Cache-Control: no-store``.
``PATCH {prefix}/.uploads/<id>``
    appends ``application/offset+octet-stream`` at ``Upload-Offset`` (``Upload-Checksum``
    optional; ``Upload-Length`` sets a deferred length): 204 with the new ``Upload-Offset``.
    The PATCH that completes the upload makes it a file under its name and answers with
    ``Content-Location``: the file's URL (its JSON is in the listing of its folder).
``DELETE {prefix}/.uploads/<id>``
    termination: 204, nothing of the upload left (423 while a PATCH appends).
``OPTIONS``
    ``Tus-Version``, ``Tus-Extension``, ``Tus-Max-Size``, ``Tus-Checksum-Algorithm`` (and the
    CORS preflight answer). A ``POST`` with ``X-HTTP-Method-Override: PATCH|DELETE`` is that
    method (tus-js-client's ``overridePatchMethod``).

Who may: the ACL is asked for ``write`` with the upload's file name at creation and at every
later request; an upload belongs to the credential that created it (a fingerprint of its
``Authorization`` header, :func:`gridserve.tus.owner_of`, keyed by the signing key), and for
any other credential it is answered exactly as an unknown id (the ACL asked with the target
``.uploads/<id>``, then 404).
Signed scoped upload URLs are for ``PUT`` only: tus's later requests go to URLs nobody signed.

Policy, as ``PUT``'s: the name normalised (400), its extension (415), the size from
``Upload-Length`` (413, ``Tus-Max-Size``), an existing name (409 with ``reject``; ``rename``
picks the free name at creation; a file stored under the name while the upload was in
progress is never overwritten: ``reject`` makes the completion 409 and terminates the upload,
``rename`` picks a free name again at completion), the type from the first bytes as soon as
they are known (415, and the upload is terminated). An expired upload is terminated and
answered 404. An upload with all its bytes whose completion failed or never ran (a crash) is
completed by the next ``HEAD``.
Completion stores the type ``PUT`` would (declared ``filetype``, sniffed head, name) and hands
the file to the media service (facts, posters). ``--faststart`` does not rewrite tus uploads
(their bytes are stored as they come); they are flagged as any file is.

Options: ``storage``, ``acl`` (default :class:`~gridserve.acl.AllowReads`: no writes),
``upload_policy``, ``prefix``, ``media``, ``upload_expiry`` (seconds; sliding: renewed by
every PATCH), ``linger_bytes`` (how much of a refused body is read and discarded before the
connection is closed), ``signing_key`` (``Content-Location`` signed for an hour, as listings
sign the URLs they hand out).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import tornado.web

from gridserve import tus
from gridserve.acl import (
    ACL,
    AllowReads,
    Refused,
    SigningKeys,
    has_credentials,
    is_allowed,
    key_list,
)
from gridserve.handlers.errors import HTTPErrorWithHeaders
from gridserve.handlers.files import (
    DEFAULT_LINGER_BYTES,
    UNLIMITED_BODY,
    BodyChannel,
    describe_file,
    free_name,
    handed_out_url,
)
from gridserve.handlers.stream import StorageRequestHandler
from gridserve.handlers.tuscomplete import completion_name, content_type_of, failure_answer
from gridserve.media.service import MediaService
from gridserve.storage.base import (
    FileInfo,
    InsufficientStorage,
    InvalidKey,
    Storage,
    StorageUnavailable,
)
from gridserve.storage.resumable import (
    HEAD_BYTES,
    UploadLocked,
    UploadNotFound,
    UploadState,
)
from gridserve.uploads import Rejected, UploadPolicy, sanitize_name

_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_OVERRIDABLE = ("PATCH", "DELETE")


@tornado.web.stream_request_body
class TusHandler(StorageRequestHandler):
    """tus 1.0.0 over a storage's resumable-upload operations (see the module docstring)."""

    SUPPORTED_METHODS: tuple[str, ...] = ("POST", "HEAD", "PATCH", "DELETE", "OPTIONS")
    CORS_EXPOSE = (
        "Location, Content-Location, Upload-Offset, Upload-Length, Upload-Expires, "
        "Upload-Metadata, Upload-Defer-Length, Tus-Version, Tus-Resumable, Tus-Max-Size, "
        "Tus-Extension, Tus-Checksum-Algorithm"
    )
    CORS_ALLOW_HEADERS = (
        "Authorization, Content-Type, Tus-Resumable, Upload-Length, Upload-Offset, "
        "Upload-Metadata, Upload-Defer-Length, Upload-Concat, Upload-Checksum, "
        "X-HTTP-Method-Override, X-Requested-With"
    )

    def initialize(  # type: ignore[override]
        self,
        storage: Storage,
        acl: ACL | None = None,
        upload_policy: UploadPolicy | None = None,
        prefix: str = "/fs",
        media: MediaService | None = None,
        upload_expiry: float = tus.DEFAULT_EXPIRY_SECONDS,
        linger_bytes: int = DEFAULT_LINGER_BYTES,
        signing_key: SigningKeys | None = None,
    ) -> None:
        super().initialize()
        self.storage = storage
        self.acl: ACL = acl or AllowReads()
        self.upload_policy = upload_policy or UploadPolicy()
        self.url_prefix = prefix.rstrip("/")
        self.media = media
        self.upload_expiry = upload_expiry
        self.linger_bytes = linger_bytes
        self.signing_key = signing_key
        self.state: UploadState | None = None
        self._channel: BodyChannel | None = None
        self._append: asyncio.Future[UploadState] | None = None
        self._discarded = 0

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Tus-Resumable", tus.TUS_VERSION)
        self.set_header("Cache-Control", "no-store")
        self.clear_header("Content-Type")  # tus answers carry no body but errors' text

    def compute_etag(self) -> None:
        return None  # the answers describe an upload in progress: nothing to validate

    def upload_url(self, upload_id: str) -> str:
        return f"{self.url_prefix}/.uploads/{upload_id}"

    @property
    def max_size(self) -> int | None:
        return self.upload_policy.max_size

    # -- dispatch ------------------------------------------------------------------------

    async def prepare(self) -> None:
        method = self.request.method
        if method == "OPTIONS":
            return
        override = self.request.headers.get("X-HTTP-Method-Override", "").strip().upper()
        if method == "POST" and override:
            if override not in _OVERRIDABLE:
                raise tornado.web.HTTPError(400, reason="Unsupported X-HTTP-Method-Override")
            self.request.method = method = override
        upload_id = (self.path_args[0] if self.path_args else None) or ""
        try:
            tus.check_version(self.request.headers.get("Tus-Resumable"))
            if method == "POST":
                if upload_id:
                    raise tornado.web.HTTPError(405)
                await self._create()
                return
            if not upload_id:
                raise tornado.web.HTTPError(405)
            self.state = await self._owned_upload(upload_id)
            if method == "PATCH":
                tus.check_patch_type(self.request.headers.get("Content-Type"))
                append = tus.parse_append(self.state, self.request.headers, self.max_size)
                self._start_append(self.state, append)
        except tus.TusError as exc:
            raise HTTPErrorWithHeaders(exc.status, exc.headers, reason=exc.reason) from None
        except Rejected as exc:
            raise tornado.web.HTTPError(exc.status, reason=exc.reason) from None

    async def authorize(self, target: str) -> None:
        """401/403 unless the ACL allows ``write`` of ``target`` (as the files handler)."""
        try:
            if await is_allowed(self.acl, self.request, "write", target):
                return
        except Refused as exc:
            raise tornado.web.HTTPError(exc.status, reason=exc.reason) from None
        raise tornado.web.HTTPError(403 if has_credentials(self.request) else 401)

    async def _owned_upload(self, upload_id: str) -> UploadState:
        """The upload ``upload_id`` if it exists, is this credential's and has not expired;
        every other case is one answer: the ACL's for ``.uploads/<id>``, then 404."""
        state: UploadState | None = None
        if _ID_RE.fullmatch(upload_id):
            try:
                state = await self.storage.upload_state(upload_id)
            except UploadNotFound:
                state = None
            except StorageUnavailable as exc:
                raise self.storage_http_error(exc) from None
        if state is not None and tus.is_expired(state, _now()):
            try:
                await self.storage.terminate_upload(state.id)
                state = None
            except UploadLocked:
                pass  # a PATCH is appending: it renews the expiry (this request: 423 or 200)
            except (UploadNotFound, StorageUnavailable):
                state = None
        if state is None or not tus.owned_by(state, self._owners()):
            await self.authorize(f".uploads/{upload_id}")
            raise tornado.web.HTTPError(404)
        await self.authorize(state.name)
        return state

    def _owners(self) -> list[str]:
        """This request's owner fingerprints, the first the one creation stores."""
        keys = key_list(self.signing_key) if self.signing_key is not None else []
        return tus.owners_of(self.request.headers.get("Authorization"), keys)

    # -- creation --------------------------------------------------------------------------

    async def _create(self) -> None:
        headers = self.request.headers
        # In PUT's order: malformed (400), the ACL (so a stranger learns no more), size (413),
        # name exists (409), extension (415).
        creation = tus.parse_creation(headers, None)
        if creation.filename is None:
            raise tus.TusError(400, "Upload-Metadata needs a filename")
        name = sanitize_name(creation.filename)
        await self.authorize(name)
        tus.check_size(creation.length, self.max_size)
        with_body = self._has_body()
        if with_body:
            tus.check_patch_type(headers.get("Content-Type"))
        try:
            name = await free_name(self.storage, self.upload_policy, name)
        except StorageUnavailable as exc:
            raise self.storage_http_error(exc) from None
        self.upload_policy.check_name(name)
        try:
            state = await self.storage.begin_upload(
                name,
                length=creation.length,
                owner=self._owners()[0],
                metadata=creation.metadata,
                expires_at=tus.expires_at(_now(), self.upload_expiry),
            )
        except NotImplementedError:
            raise tornado.web.HTTPError(501, reason="This storage takes no tus uploads") from None
        except (StorageUnavailable, InsufficientStorage, InvalidKey) as exc:
            raise self.storage_http_error(exc) from None
        self.state = state
        if with_body:
            try:
                append = tus.parse_append(state, headers, self.max_size, offset=0)
            except tus.TusError:
                await self._terminate_quietly(state.id)
                raise
            self._start_append(state, append)
            # The client learns the upload's URL only from a 201: a creation whose body
            # failed leaves nothing behind.
            assert self._append is not None
            self._append.add_done_callback(
                lambda f: (
                    None
                    if f.cancelled() or f.exception() is None
                    else asyncio.ensure_future(self._terminate_quietly(state.id))
                )
            )

    def _has_body(self) -> bool:
        headers = self.request.headers
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            return True
        declared = headers.get("Content-Length", "0").strip()
        return declared.isdigit() and int(declared) > 0

    # -- appending -------------------------------------------------------------------------

    def _start_append(self, state: UploadState, append: tus.Append) -> None:
        connection = self.request.connection
        if connection is not None and hasattr(connection, "set_max_body_size"):
            # Tornado's cap is for buffered bodies; ours is the upload's room, counted below.
            connection.set_max_body_size(UNLIMITED_BODY)
        channel = self._channel = BodyChannel()
        chunks = self._guarded(state, append, channel.chunks())
        self._append = asyncio.ensure_future(
            self.storage.append_upload(
                state.id,
                append.offset,
                chunks,
                length=append.length,
                checksum=append.checksum,
                expires_at=tus.expires_at(_now(), self.upload_expiry),
            )
        )
        # Retrieved even when the request ended first (client gone: the storage kept the
        # bytes); a body refused mid-way frees data_received if it waits for room.
        self._append.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._append.add_done_callback(lambda _: channel.close())
        metrics = self.metrics
        if metrics is not None:
            metrics.uploads_in_flight.inc()
            self._append.add_done_callback(lambda _: metrics.uploads_in_flight.dec())

    async def _guarded(
        self, state: UploadState, append: tus.Append, body: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        """The body as the storage gets it: never past the room the upload has (413), and
        refused (415) as soon as the first bytes show a type the policy refuses."""
        head = bytearray(state.head)
        total = state.length if state.length is not None else append.length
        need = HEAD_BYTES if total is None else min(HEAD_BYTES, total)
        checked = len(head) >= need
        received = 0
        async for chunk in body:
            received += len(chunk)
            if append.room is not None and received > append.room:
                if total is None:
                    raise Rejected(413, f"larger than the {self.max_size}-byte limit")
                raise Rejected(413, "more bytes than the upload has left")
            if not checked:
                head += chunk[: need - len(head)]
                if len(head) >= need:
                    checked = True
                    self._check_type(state, bytes(head))
            yield chunk

    def _check_type(self, state: UploadState, head: bytes) -> str:
        """The type the upload is stored as (:func:`content_type_of`), 415 if refused."""
        content_type = content_type_of(state, head)
        self.upload_policy.check_type(state.name, content_type)
        return content_type

    async def data_received(self, chunk: bytes) -> None:
        if self._append is None or self._channel is None:
            return  # no body expected (HEAD, DELETE, a creation without one): ignored
        if self._append.done():
            # Refused mid-body: read and discard a bounded amount, so the client reads the
            # answer instead of a reset; past that, answer now and close.
            self._discarded += len(chunk)
            if self._discarded > self.linger_bytes and not self._finished:
                await self._answer(close=True)
            return
        if self.metrics is not None:
            self.metrics.upload_bytes.inc(len(chunk))
        await self._channel.put(chunk)

    def abort_work(self) -> None:
        if self._channel is not None:
            self._channel.cut("the client went away")  # the storage keeps what it got

    async def post(self, *args: Any) -> None:
        assert self.state is not None
        self.set_status(201)
        self.set_header("Location", self.upload_url(self.state.id))
        if self._append is None:
            await self._answer_without_body()
            return
        await self._answer()

    async def _answer_without_body(self) -> None:
        """A creation without a body: complete at once when its length is 0 (an empty file)."""
        state = self.state
        assert state is not None
        if state.complete:
            try:
                await self._complete(state)
            except Exception as exc:
                answer = failure_answer(exc)
                if answer is None:
                    raise
                await self._terminate_quietly(state.id)  # its URL was never handed out
                self.send_error(answer[0], reason=answer[1])
                return
        self._describe_progress(state)

    async def patch(self, *args: Any) -> None:
        await self._answer()

    async def _answer(self, close: bool = False) -> None:
        """Ends the body, awaits the append (and completion), and answers."""
        if self._finished or self._append is None or self._channel is None:
            return
        await self._channel.put(None)
        state = self.state
        assert state is not None
        try:
            # Shielded: a client leaving cancels this request, never the storage's write.
            state = await asyncio.shield(self._append)
            if state.complete:
                await self._complete(state)
        except Exception as exc:
            answer = failure_answer(exc)
            if answer is None:
                raise
            if isinstance(exc, Rejected) and exc.status == 415:
                await self._terminate_quietly(state.id)
            if self._finished:
                return
            if close:
                self.set_header("Connection", "close")
            self.send_error(answer[0], reason=answer[1])
            return
        finally:
            self._channel.close()
        if self._finished:
            return
        if self.get_status() == 200:
            self.set_status(204)
        self._describe_progress(state)

    async def _complete(self, state: UploadState) -> FileInfo:
        """The upload made a file: stored with the type ``PUT`` would store, checked against
        the policy (415: terminated), then handed to the media service; the answer carries
        its URL (``Content-Location``)."""
        content_type = self._check_type(state, state.head)
        name = await self._final_name(state)
        info = await self.storage.complete_upload(
            state.id, content_type=content_type, name=None if name == state.name else name
        )
        if self.media is not None:
            self.media.submit(info)  # facts and posters, off the request path
        url = describe_file(info, self.url_prefix)["url"]
        self.set_header("Content-Location", handed_out_url(self.signing_key, self.request, url))
        return info

    async def _final_name(self, state: UploadState) -> str:
        """:func:`~gridserve.handlers.tuscomplete.completion_name`; the upload is terminated
        when it refuses (``reject``): kept, it would read as finished (a client's ``HEAD``
        finds ``Upload-Offset`` equal to ``Upload-Length``) though no file exists."""
        try:
            return await completion_name(self.storage, self.upload_policy, state)
        except Rejected:
            await self._terminate_quietly(state.id)
            raise

    async def _terminate_quietly(self, upload_id: str) -> None:
        with contextlib.suppress(UploadNotFound, UploadLocked, StorageUnavailable):
            await self.storage.terminate_upload(upload_id)

    def _describe_progress(self, state: UploadState) -> None:
        self.set_header("Upload-Offset", str(state.offset))
        if not state.complete:
            self.set_header("Upload-Expires", tus.format_expires(state.expires_at))

    # -- HEAD, DELETE, OPTIONS ---------------------------------------------------------------

    async def head(self, *args: Any) -> None:
        state = self.state
        assert state is not None
        if state.complete:
            await self._finish_left_behind(state)
        self._describe_progress(state)  # a finished upload no longer expires
        if state.length is None:
            self.set_header("Upload-Defer-Length", "1")
        else:
            self.set_header("Upload-Length", str(state.length))
        if state.metadata:
            self.set_header("Upload-Metadata", tus.format_metadata(state.metadata))

    async def _finish_left_behind(self, state: UploadState) -> None:
        """Completes an upload that has all its bytes but is not a file yet: its completion
        failed (storage unavailable) or never ran (the process stopped after the last append).
        Answered as it is, a client would read ``Upload-Offset`` equal to ``Upload-Length`` as
        done and never retry; so the ``HEAD`` it sends to resume finishes it (or answers why
        not: 409/415 terminate it, 503 keeps it for the next ``HEAD``)."""
        try:
            await self._complete(state)
        except Exception as exc:
            answer = failure_answer(exc)
            if answer is None:
                raise
            if isinstance(exc, Rejected):
                await self._terminate_quietly(state.id)
            raise tornado.web.HTTPError(answer[0], reason=answer[1]) from None

    async def delete(self, *args: Any) -> None:
        state = self.state
        assert state is not None
        try:
            await self.storage.terminate_upload(state.id)
        except UploadNotFound:
            raise tornado.web.HTTPError(404) from None
        except UploadLocked:  # a PATCH is appending: terminate after it
            raise tornado.web.HTTPError(423, reason="Locked: a PATCH is appending") from None
        except StorageUnavailable as exc:
            raise self.storage_http_error(exc) from None
        self.set_status(204)

    async def options(self, *args: Any) -> None:
        await super().options(*args)
        for name, value in tus.capability_headers(self.max_size).items():
            self.set_header(name, value)


def _now() -> datetime:
    return datetime.now(timezone.utc)
