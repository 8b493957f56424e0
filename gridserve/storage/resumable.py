"""Resumable uploads (tus) as a storage keeps them: :class:`UploadState`, the errors the
partial-upload operations raise, and :class:`RunningDigests`.

The operations themselves are methods of :class:`~gridserve.storage.base.Storage` (see its
module docstring, "Resumable uploads"); each backend implements them and the contract suite
(``tests/test_resumable_contract.py``) checks them on every backend. The protocol (headers,
statuses) is :mod:`gridserve.tus`'s and the HTTP layer :mod:`gridserve.handlers.tus`'s: this
module knows nothing of either.

State lives in the storage, never only in process memory, so that any process or host that
shares the storage resumes any upload. What a process may keep is a cache that saves work
(:class:`RunningDigests`), always checked against the stored offset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from gridserve.storage.base import FileNotFound, StorageError, UploadDigests, utc

# What a storage keeps of an upload's first bytes, for type sniffing at any later request.
HEAD_BYTES = 8192
# Checksum algorithms the ``checksum`` extension accepts (hashlib names).
CHECKSUM_ALGORITHMS = ("sha1", "sha256", "md5", "sha512")


@dataclasses.dataclass
class UploadState:
    """One resumable upload in progress.

    ``id``: chosen by the storage; URL-safe (``[A-Za-z0-9_-]``, at most 64 characters) and
    unguessable (at least 128 random bits): on an open server, knowing it is the only authority.
    ``name``: the file it becomes (already normalised by the caller). ``length``: total bytes,
    None while deferred (``Upload-Defer-Length``). ``offset``: bytes stored so far.
    ``owner``: opaque, set by the caller at creation (a fingerprint of the credential that
    created it; ``""`` on an open server). ``metadata``: the decoded ``Upload-Metadata``.
    ``head``: the first ``min(offset, HEAD_BYTES)`` bytes, for sniffing at any later request.
    """

    id: str
    name: str
    length: int | None
    offset: int
    created_at: datetime
    expires_at: datetime
    owner: str = ""
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    head: bytes = b""

    @property
    def complete(self) -> bool:
        return self.length is not None and self.offset == self.length


class UploadNotFound(FileNotFound):
    """No such upload: never created, completed, terminated or swept (the handler: 404)."""


class UploadConflict(StorageError):
    """The request's offset is not the stored offset, or a length is set twice or differently,
    or bytes would go past the length (the handler: 409, or 413 past ``Tus-Max-Size``)."""


class UploadLocked(StorageError):
    """Another request is appending to this upload right now (the handler: 423)."""


class ChecksumMismatch(StorageError):
    """The bytes of this append do not match the checksum given: they were discarded and the
    offset is unchanged (the handler: 460)."""


@dataclasses.dataclass(frozen=True)
class Checksum:
    """An ``Upload-Checksum``: a hashlib algorithm name and the expected digest."""

    algorithm: str
    digest: bytes

    def hasher(self) -> Any:
        return hashlib.new(self.algorithm)


class RunningDigests:
    """md5 + sha256 of uploads in progress, kept per process so that completion need not read
    the bytes back: ``at(id, offset)`` is the digests of the first ``offset`` bytes if this
    process saw them all, else None (another process took part: the storage re-reads). Bounded
    (least recently used dropped first), so forgetting is always safe."""

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._known: OrderedDict[str, tuple[int, UploadDigests]] = OrderedDict()

    def at(self, upload_id: str, offset: int) -> UploadDigests | None:
        """A copy of the digests of bytes ``[0, offset)``, or None when not known here."""
        known = self._known.get(upload_id)
        if offset == 0:
            return UploadDigests()
        if known is None or known[0] != offset:
            return None
        self._known.move_to_end(upload_id)
        return known[1].copy()

    def store(self, upload_id: str, offset: int, digests: UploadDigests) -> None:
        """Remembers ``digests`` as those of bytes ``[0, offset)`` (after a committed append)."""
        self._known[upload_id] = (offset, digests)
        self._known.move_to_end(upload_id)
        while len(self._known) > self.capacity:
            self._known.popitem(last=False)

    def forget(self, upload_id: str) -> None:
        self._known.pop(upload_id, None)


def new_upload(
    name: str, length: int | None, owner: str, metadata: Mapping[str, str], expires_at: datetime
) -> UploadState:
    """The state of a new upload (``begin_upload``'s arguments, offset 0, a fresh unguessable
    id); :class:`UploadConflict` for a negative ``length``."""
    if length is not None and length < 0:
        raise UploadConflict(f"negative length {length}")
    return UploadState(
        id=secrets.token_urlsafe(24),
        name=name,
        length=length,
        offset=0,
        created_at=datetime.now(timezone.utc),
        expires_at=utc(expires_at),
        owner=owner,
        metadata=dict(metadata),
    )


def check_append(state: UploadState, offset: int, length: int | None) -> None:
    """:class:`UploadConflict` unless an append at ``offset`` fits ``state``: ``offset`` is the
    stored offset, and ``length`` (when given) equals a length already set and is not below the
    offset."""
    if offset != state.offset:
        raise UploadConflict(f"offset {offset}, the upload is at {state.offset}")
    if length is not None:
        if state.length is not None and length != state.length:
            raise UploadConflict(f"length {length}, the upload's is {state.length}")
        if length < state.offset:
            raise UploadConflict(f"length {length} is below the offset {state.offset}")
