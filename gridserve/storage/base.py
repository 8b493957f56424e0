"""The storage interface every backend implements and the handlers are written against.

A storage maps a *key* (a file's id as a string, or its name) to a :class:`FileInfo`, and
reads a byte range of that file as an async iterator of ``bytes``. Backends differ only behind
this interface; one conformance suite (``tests/test_storage_contract.py``) runs against each.

Override points of :class:`Storage`, what each receives and returns:

``resolve(key, revision=None) -> FileInfo``
    Looks a file up. ``key`` is a non-empty ``str`` (already URL-decoded). A key that is a
    backend id selects that file (``revision`` is then ignored); otherwise it is a filename and
    ``revision`` picks among the files of that name as GridFS does (``-1``/None newest, ``-2``
    the one before, ``0`` oldest, ``1`` the second oldest). Raises :class:`FileNotFound`,
    :class:`InvalidKey` or :class:`StorageUnavailable`.

``read(info, start=0, stop=None) -> AsyncGenerator[bytes, None]``
    Yields the bytes ``start <= i < stop`` of the file, in order, reading only what that
    range needs, with bounded read-ahead. Raises :class:`FileNotFound` when the file was
    deleted since it was resolved, never :class:`CorruptFile` for that: before the first byte
    (the handler then answers 404) or, where a backend notices it only later, after some bytes
    (the handler then aborts the response); a backend that keeps reading an open file to its end
    may instead complete the read with the content ``info`` describes. Raises
    :class:`CorruptFile` if the stored data of a file still stored does not match ``info``
    (missing or short chunk, replaced content), :class:`StorageUnavailable` if the backend goes
    away. The consumer may stop early; it must then close the iterator (``aclosing``).

``read_buffers(info, start=0, stop=None) -> AsyncGenerator[list[bytes | memoryview], None]``
    The same bytes and errors as ``read``, a list of pieces at a time, each piece ``bytes`` or
    a read-only ``memoryview`` of bytes (a slice of a database reply, never copied): what a
    sender writes to its socket, one flush per list. Default: each piece of ``read`` as a list
    of one. A backend overrides it when it can hand over what one fetch brought without
    copying it (GridFS: the ``data`` of every chunk of one cursor reply).

``save(name, chunks, *, content_type=None, metadata=None, original=None) -> FileInfo``
    Stores a new file (a new revision when the name exists) from an async iterable of
    ``bytes``. Atomic: until it returns, no reader sees the file; if it raises, nothing is
    left behind. With ``original`` (a :class:`FileInfo` from any storage: ``gridserve
    migrate``) the new file is a copy of it that keeps its validators: its upload date (so
    Last-Modified), its ``md5`` and ``metadata`` verbatim (no ``sha256`` is added; what they
    state is checked against the content, :class:`CorruptFile` if it differs) and so its ETag,
    and on GridFS its ``_id`` when that is an ObjectId (:class:`FileExists` if taken).

``list(prefix="", limit=100, after="") -> AsyncIterator[FileInfo]``
    The newest revision of each file whose name starts with ``prefix`` and sorts after
    ``after`` (a paging cursor: the last name of the previous page), by name, at most ``limit``.

``revisions(name) -> list[FileInfo]``
    Every stored revision of the file named ``name``, oldest first (``[]`` when there is
    none). The default asks :meth:`resolve` for revision 0, 1, ... until :class:`FileNotFound`
    (backends that keep one revision answer with at most one); GridFS overrides it with one
    query. ``gridserve rm NAME`` and ``DELETE {prefix}/NAME`` delete them all.

``delete(info) -> None``,
``ping() -> None`` (raises :class:`StorageUnavailable`), ``close() -> None``.

Optional, for a chunk cache in front (:mod:`gridserve.storage.cache`):

``cache_key(info) -> Hashable | None``
    What names the *content* of ``info``: files with equal keys have identical bytes, and a
    file whose bytes change gets a new key (GridFS: the file id; S3: key, ETag and length).
    None (the default): the content is not cached.

``cache_block_size(info) -> int``
    The unit the backend fetches and a cache keys on: a range read ``read(info, k * size,
    (k + 1) * size)`` is one stored piece (a GridFS chunk). Default ``info.chunk_size``.

Derived data (media facts, posters), with defaults that store nothing; ``delete`` removes a
file's derived files too:

``update_metadata(info, patch) -> None``
    Merges ``patch`` into the file's metadata without touching its bytes, its id or its
    validators (GridFS: the files document; local: the sidecar; S3: a derived record, since
    rewriting an object changes its Last-Modified). Raises :class:`FileNotFound` when the file
    is gone or no longer has the content ``info`` describes (a new revision under the same id).
    :meth:`Storage.media_of` reads back ``metadata["media"]``.
``put_derived(info, name, data, content_type)`` / ``get_derived(info, name) -> Derived | None``
    A small derived file (a poster) kept in a namespace of the backend that no upload can
    write and no listing shows. It belongs to the content it was made from: ``get_derived``
    answers None once the file's ETag changed (a new revision under the same name).
``delete_derived(info) -> None``, ``derived_names(info) -> list[str]``
    Forget / enumerate a file's derived files (``migrate`` copies them by name).

Resumable uploads (tus; types and errors in :mod:`gridserve.storage.resumable`). Each backend
keeps an upload's state and bytes *in the storage*, so any process or host sharing it resumes
any upload; nothing of an upload is visible to ``resolve``, ``read`` or ``list`` before it
completes. Defaults: a storage that takes none (``begin_upload`` raises NotImplementedError).

``begin_upload(name, *, length, owner, metadata, expires_at) -> UploadState``
    Registers a new upload (``offset`` 0) that will become the file ``name``; ``length`` None
    defers it. The storage picks ``id`` (URL-safe, unguessable).
``upload_state(upload_id) -> UploadState``
    Its stored state; :class:`UploadNotFound` when unknown, completed or terminated. An
    expired upload not yet swept is still answered (the caller compares ``expires_at``).
``append_upload(upload_id, offset, chunks, *, length=None, checksum=None, expires_at=None)``
    Appends the bytes of ``chunks`` at ``offset`` and returns the new state. Raises
    :class:`UploadLocked` while another append to the same upload runs (in this process and,
    GridFS, in any process: a lease in the upload record; local: an ``flock`` on one host or a
    shared filesystem with working locks; S3: this host's processes only),
    :class:`UploadConflict` when ``offset`` is not the stored offset, when ``length`` (setting a
    deferred length) differs from a length already set or is below the offset, or when the bytes
    would pass the length (nothing past it is stored). With ``checksum``, the bytes of this call
    are kept only if they match it, else discarded (offset unchanged) and
    :class:`ChecksumMismatch` raised. Without one, if ``chunks`` raises (client gone) the bytes
    received up to then are kept, the offset advanced to them, and the error re-raised.
    ``expires_at`` (when given) replaces the stored expiry.
``complete_upload(upload_id, *, content_type=None, metadata=None, name=None) -> FileInfo``
    Once ``offset == length``: makes it a file under its name (or ``name``, a normalised name
    the caller picked instead: its own was taken meanwhile) exactly as ``save`` would (a new
    revision on GridFS, replacing on local and S3; ``md5`` and ``metadata.sha256`` of the whole
    content; ``content_type`` and ``metadata`` stored), atomically, and forgets the upload.
    :class:`UploadConflict` if it is not complete.
``terminate_upload(upload_id) -> None``
    Removes the upload and every byte it stored (chunks, temp file, multipart upload, tail).
``expired_uploads(now, limit=1000) -> list[UploadState]``
    Uploads whose ``expires_at`` is before ``now``, for the sweep to terminate.
"""

from __future__ import annotations

import abc
import builtins
import hashlib
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Hashable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from gridserve.validators import ETag, etag_for, http_seconds

if TYPE_CHECKING:
    from gridserve.storage.resumable import Checksum, UploadState

MAX_KEY_BYTES = 1024


class StorageError(Exception):
    """Base of the errors a storage raises."""


class FileNotFound(StorageError):
    """No file has that key (or that revision)."""


class InvalidKey(StorageError):
    """The key can never name a file (NUL byte, too long, empty): a client error."""


class StorageUnavailable(StorageError):
    """The backend cannot be reached now; the request may be retried later."""


class InsufficientStorage(StorageError):
    """The backend is full (no space left on the device, a quota): the upload is refused (507)
    and nothing of it is kept."""


class CorruptFile(StorageError):
    """The stored data disagrees with the file's description (missing or short chunk)."""


class FileExists(StorageError):
    """A copy that keeps its original's id found that id taken (``save(original=...)``)."""


@dataclass(frozen=True)
class FileInfo:
    """What the handlers know of a stored file, without reading its content.

    ``id`` is the backend's own id (an ``ObjectId`` for GridFS); ``str(id)`` is a key that
    resolves to this file. ``upload_date`` is timezone-aware UTC. ``content_type`` is what was
    stored, if anything; the handler falls back to the extension. ``md5`` is the stored hex
    digest, if any. ``native_etag`` is a strong validator the backend keeps itself (S3's ETag),
    used for the ETag when no digest is stored. ``version`` is a backend's token for the
    bytes seen at lookup that its ``read`` checks (S3's own ETag), not a validator.
    """

    id: Any
    filename: str
    length: int
    upload_date: datetime
    chunk_size: int = 0
    content_type: str | None = None
    md5: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    native_etag: str | None = None
    version: str | None = None

    # Pure functions of a frozen value, asked for several times per request: computed once.
    @cached_property
    def etag(self) -> ETag:
        return etag_for(
            self.id, self.length, self.upload_date, self.md5, self.metadata, self.native_etag
        )

    @cached_property
    def last_modified(self) -> datetime:
        return http_seconds(self.upload_date)


@dataclass(frozen=True)
class Derived:
    """A derived file: its bytes and content type."""

    data: bytes
    content_type: str


class UploadDigests:
    """The MD5 and SHA-256 of an upload, updated as its pieces stream through: what every
    backend stores with a new file (``md5`` for the ETag, ``sha256`` in its metadata)."""

    __slots__ = ("_md5", "_sha256")

    def __init__(self) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha256 = hashlib.sha256()

    def update(self, piece: bytes) -> None:
        self._md5.update(piece)
        self._sha256.update(piece)

    def copy(self) -> UploadDigests:
        twin = UploadDigests.__new__(UploadDigests)
        twin._md5 = self._md5.copy()
        twin._sha256 = self._sha256.copy()
        return twin

    @property
    def md5(self) -> str:
        return self._md5.hexdigest()

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()


@dataclass(frozen=True)
class CopiedValidators:
    """What a copy of ``original`` stores (see ``save(original=...)``): the ``md5`` (None if
    the original had none), the ``metadata`` verbatim, and ``etag``, the opaque ETag to keep
    beside them when neither carries a digest (the original's ETag came from its id and date,
    which a backend keying by name cannot reproduce)."""

    md5: str | None
    metadata: dict[str, Any]
    etag: str | None


def copied_validators(
    original: FileInfo, metadata: Mapping[str, Any] | None, digests: UploadDigests
) -> CopiedValidators:
    """The validators a copy of ``original`` stores, once its content streamed through
    ``digests``; :class:`CorruptFile` if the content is not what ``original`` states."""
    if original.md5 and original.md5.lower() != digests.md5:
        raise CorruptFile(f"{original.filename}: content does not match its md5")
    kept = dict(original.metadata if metadata is None else metadata)
    sha256 = kept.get("sha256")
    if isinstance(sha256, str) and sha256.lower() != digests.sha256:
        raise CorruptFile(f"{original.filename}: content does not match its sha256")
    has_digest = bool(original.md5) or any(isinstance(kept.get(k), str) for k in ("sha256", "md5"))
    return CopiedValidators(
        md5=digests.md5 if original.md5 else None,
        metadata=kept,
        etag=None if has_digest else original.etag.opaque,
    )


def check_key(key: str) -> str:
    """Returns ``key`` if it can name a file at all, else raises :class:`InvalidKey`."""
    if not key:
        raise InvalidKey("empty key")
    if "\x00" in key:
        raise InvalidKey("key contains a NUL byte")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey(f"key longer than {MAX_KEY_BYTES} bytes")
    return key


def stored_content_type(declared: Any, metadata: Mapping[str, Any]) -> str | None:
    """The content type a file was stored with: the top-level field, else ``contentType`` or
    ``content_type`` in its metadata (where older GridFS tools put it), else None."""
    for value in (declared, metadata.get("contentType"), metadata.get("content_type")):
        if isinstance(value, str) and value:
            return value
    return None


def _no_upload(upload_id: str) -> Exception:
    from gridserve.storage.resumable import UploadNotFound

    return UploadNotFound(upload_id)


def utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime (drivers return naive UTC by default)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


class Storage(abc.ABC):
    """A place files live. See the module docstring for the contract of each method.

    ``keeps_revisions`` says whether saving an existing name keeps the older file as a
    revision (GridFS) or replaces it (local disk, S3: the newest only).
    """

    keeps_revisions = False

    @abc.abstractmethod
    async def resolve(self, key: str, revision: int | None = None) -> FileInfo: ...

    @abc.abstractmethod
    def read(
        self, info: FileInfo, start: int = 0, stop: int | None = None
    ) -> AsyncGenerator[bytes, None]: ...

    async def read_buffers(
        self, info: FileInfo, start: int = 0, stop: int | None = None
    ) -> AsyncGenerator[builtins.list[bytes | memoryview], None]:
        """What :meth:`read` yields, several pieces at a time (see the module docstring)."""
        chunks = self.read(info, start, stop)
        try:
            async for chunk in chunks:
                yield [chunk]
        finally:
            await chunks.aclose()

    @abc.abstractmethod
    async def save(
        self,
        name: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        original: FileInfo | None = None,
    ) -> FileInfo: ...

    @abc.abstractmethod
    async def delete(self, info: FileInfo) -> None: ...

    @abc.abstractmethod
    def list(
        self, prefix: str = "", limit: int = 100, after: str = ""
    ) -> AsyncIterator[FileInfo]: ...

    async def revisions(self, name: str) -> builtins.list[FileInfo]:
        """Every revision of the file named ``name``, oldest first (see the module doc)."""
        found: builtins.list[FileInfo] = []
        while True:
            try:
                info = await self.resolve(name, len(found))
            except FileNotFound:
                return found
            # An id-shaped name resolves to that id whatever the revision: not a revision.
            if info.filename != name or any(info.id == seen.id for seen in found):
                return found
            found.append(info)

    @abc.abstractmethod
    async def ping(self) -> None: ...

    async def close(self) -> None:  # noqa: B027 - optional override, nothing to release by default
        """Releases what the storage owns (its database client, for one)."""

    def cache_key(self, info: FileInfo) -> Hashable | None:
        """What names ``info``'s content for a chunk cache; None: do not cache it."""
        return None

    def cache_block_size(self, info: FileInfo) -> int:
        """The aligned unit a chunk cache reads ``info`` in (see the module docstring)."""
        return info.chunk_size

    # -- derived data: defaults for a storage that keeps none ---------------------------------

    async def update_metadata(self, info: FileInfo, patch: Mapping[str, Any]) -> None:
        """Merges ``patch`` into the stored metadata of ``info`` (see the module docstring)."""
        raise NotImplementedError(f"{type(self).__name__} cannot update metadata")

    async def media_of(self, info: FileInfo) -> Mapping[str, Any] | None:
        """The media facts stored for ``info`` (``metadata["media"]``), or None."""
        media = info.metadata.get("media")
        return media if isinstance(media, Mapping) else None

    async def put_derived(
        self, info: FileInfo, name: str, data: bytes, content_type: str
    ) -> None:  # pragma: no cover - backends override
        raise NotImplementedError(f"{type(self).__name__} keeps no derived files")

    async def get_derived(self, info: FileInfo, name: str) -> Derived | None:
        return None

    async def delete_derived(self, info: FileInfo) -> None:
        return None

    async def derived_names(self, info: FileInfo) -> builtins.list[str]:
        return []

    # -- resumable uploads (tus): see "Resumable uploads" in the module docstring ------------

    async def begin_upload(
        self,
        name: str,
        *,
        length: int | None,
        owner: str,
        metadata: Mapping[str, str],
        expires_at: datetime,
    ) -> UploadState:
        raise NotImplementedError(f"{type(self).__name__} takes no resumable uploads")

    async def upload_state(self, upload_id: str) -> UploadState:
        raise _no_upload(upload_id)

    async def append_upload(
        self,
        upload_id: str,
        offset: int,
        chunks: AsyncIterable[bytes],
        *,
        length: int | None = None,
        checksum: Checksum | None = None,
        expires_at: datetime | None = None,
    ) -> UploadState:
        raise _no_upload(upload_id)

    async def complete_upload(
        self,
        upload_id: str,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> FileInfo:
        raise _no_upload(upload_id)

    async def terminate_upload(self, upload_id: str) -> None:
        raise _no_upload(upload_id)

    async def expired_uploads(self, now: datetime, limit: int = 1000) -> builtins.list[UploadState]:
        return []

    @property
    def description(self) -> str:
        """A short, secret-free description for logs (``GridFS media.fs``, ``local ./data``)."""
        return type(self).__name__
