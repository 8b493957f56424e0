"""Resumable uploads (tus) into GridFS: the partial-upload operations of
:class:`~gridserve.storage.gridfs.GridFSStorage` (contract: "Resumable uploads" in
:mod:`gridserve.storage.base`).

**Record.** Each upload is one document in ``<bucket>.uploads``::

    {_id: <files_id>, token, name, length (None: deferred), offset, owner,
     metadata: [{key, value}, ...], head, chunkSize, createdAt, expiresAt,
     lease: {owner, until}, clean, tailChunk}

``_id`` is the ObjectId its chunks carry as ``files_id`` and ``expiresAt`` the moment it
may be swept: the shape :func:`gridserve.sweep.record_upload` writes, so the sweep never
removes the chunks of an unexpired upload. The upload id is ``<files_id hex>-<token>``
(``token``: 192 random bits, compared in constant time); the metadata is a list of pairs
because its keys are the client's (field names must not hold ``$`` or ``.``), pairs as
documents (FerretDB stores no nested arrays).

**Chunks** are written as the bytes arrive, under ``files_id``, and no file document exists
until :meth:`complete_upload` inserts it: nothing is visible before, and completion is one
insert. **Lease**: one append (or completion) at a time, in any process on any host. Both
are :mod:`gridserve.storage.gridfsappend`'s.

**Digests.** md5 and sha256 of the whole content come from :class:`RunningDigests` when
this process saw every append, else from reading the chunks back at completion.
"""

from __future__ import annotations

import asyncio
import builtins
import hmac
import logging
import math
import secrets
import time
from collections.abc import AsyncIterable, Mapping
from datetime import datetime, timezone
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError, PyMongoError

from gridserve.storage.base import (
    CorruptFile,
    FileInfo,
    InvalidKey,
    UploadDigests,
    check_key,
    utc,
)
from gridserve.storage.gridfsappend import FREE, Append, Lease
from gridserve.storage.gridfsdocs import file_info_from_document, new_file_document, object_id
from gridserve.storage.gridfserrors import driver_errors, storage_error
from gridserve.storage.resumable import (
    Checksum,
    RunningDigests,
    UploadConflict,
    UploadLocked,
    UploadNotFound,
    UploadState,
    check_append,
)
from gridserve.storage.writes import Cleanups, settle

DEFAULT_LEASE_SECONDS = 60.0
_ID_HEX = 24
log = logging.getLogger("gridserve.storage")


def _millis(moment: datetime) -> datetime:
    """``moment`` in UTC as BSON keeps it (milliseconds), so a stored state reads back equal."""
    moment = utc(moment)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def parse_upload_id(upload_id: str) -> tuple[ObjectId, str]:
    """``(files_id, token)`` of an upload id; :class:`UploadNotFound` if it has not the shape
    of one (``<24 hex digits>-<token>``)."""
    if len(upload_id) < _ID_HEX + 2 or upload_id[_ID_HEX] != "-":
        raise UploadNotFound(upload_id)
    try:
        files_id = ObjectId(upload_id[:_ID_HEX])
    except (InvalidId, TypeError):
        raise UploadNotFound(upload_id) from None
    return files_id, upload_id[_ID_HEX + 1 :]


def state_of(record: Mapping[str, Any]) -> UploadState:
    """The :class:`UploadState` an upload record describes."""
    length = record.get("length")
    return UploadState(
        id=f"{record['_id']}-{record['token']}",
        name=str(record["name"]),
        length=None if length is None else int(length),
        offset=int(record.get("offset") or 0),
        created_at=utc(record["createdAt"]),
        expires_at=utc(record["expiresAt"]),
        owner=str(record.get("owner") or ""),
        metadata={str(pair["key"]): str(pair["value"]) for pair in record.get("metadata") or []},
        head=bytes(record.get("head") or b""),
    )


class GridFSResumableUploads:
    """The resumable-upload methods of :class:`~gridserve.storage.gridfs.GridFSStorage` (a
    mixin: it uses the storage's collections, chunk size, insert batch and cleanups)."""

    database: Any
    bucket: str
    files: Any
    chunks: Any
    chunk_size: int
    insert_batch: int
    read_ahead: int
    cleanups: Cleanups
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    _running: RunningDigests | None = None
    _upload_indexes_ready = False

    async def _ensure_indexes(self) -> None: ...  # GridFSStorage's

    @property
    def uploads(self) -> Any:
        """The ``<bucket>.uploads`` collection of upload records."""
        return self.database[f"{self.bucket}.uploads"]

    @property
    def running_digests(self) -> RunningDigests:
        if self._running is None:
            self._running = RunningDigests()
        return self._running

    async def _ensure_upload_indexes(self) -> None:
        await self._ensure_indexes()
        if not self._upload_indexes_ready:
            await self.uploads.create_index([("expiresAt", ASCENDING)])
            self._upload_indexes_ready = True

    # -- the operations ------------------------------------------------------------------

    async def begin_upload(
        self,
        name: str,
        *,
        length: int | None,
        owner: str,
        metadata: Mapping[str, str],
        expires_at: datetime,
    ) -> UploadState:
        check_key(name)
        if object_id(name) is not None:
            raise InvalidKey("a filename must not look like an ObjectId")
        if length is not None and length < 0:
            raise UploadConflict(f"negative length {length}")
        record: dict[str, Any] = {
            "_id": ObjectId(),
            "token": secrets.token_urlsafe(24),
            "name": name,
            "length": length,
            "offset": 0,
            "owner": owner,
            "metadata": [{"key": str(k), "value": str(v)} for k, v in metadata.items()],
            "head": b"",
            "chunkSize": self.chunk_size,
            "createdAt": _millis(datetime.now(timezone.utc)),
            "expiresAt": _millis(expires_at),
            "lease": {"owner": "", "until": FREE},
            "clean": True,
            "tailChunk": None,
        }
        with driver_errors():
            await self._ensure_upload_indexes()
            await self.uploads.insert_one(record)
        return state_of(record)

    async def upload_state(self, upload_id: str) -> UploadState:
        files_id, token = parse_upload_id(upload_id)
        with driver_errors():
            record = await self.uploads.find_one({"_id": files_id})
        return state_of(_owned(record, token, upload_id))

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
        lease = await self._take_lease(upload_id, expires_at, writing=True)
        append: Append | None = None
        self.cleanups.save_started()  # close() lets it end
        try:
            state = state_of(lease.record)
            check_append(state, offset, length)
            append = Append(self, lease, state.length if length is None else length, checksum)
            await append.run(chunks)
            state = state_of(append.record)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and append is not None and not checksum:
                await self.cleanups.run(append.salvage)
            if not lease.released:
                await self.cleanups.run(lease.release)
            if isinstance(exc, PyMongoError):
                raise storage_error(exc, f"append to {upload_id} failed") from exc
            raise
        finally:
            self.cleanups.save_ended()
        return state

    async def complete_upload(
        self,
        upload_id: str,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> FileInfo:
        lease = await self._take_lease(upload_id, None, writing=False)
        record = lease.record
        files_id = record["_id"]
        try:
            length, size = record.get("length"), int(record["chunkSize"])
            if length is None or int(record["offset"]) != length:
                raise UploadConflict(f"upload {files_id} is not complete")
            if not record.get("clean"):
                last_n = math.ceil(length / size) - 1
                await self.chunks.delete_many({"files_id": files_id, "n": {"$gt": last_n}})
            digests = self.running_digests.at(upload_id, length)
            if digests is None:
                digests = await self._digests_of_chunks(files_id, length, size)
            doc = new_file_document(
                files_id, name or record["name"], length, size, digests, metadata, content_type
            )
            try:
                await settle(self.files.insert_one(doc))
            except DuplicateKeyError:
                # Only this upload makes a file with its id: a completion whose reply was
                # lost inserted it already.
                doc = await self.files.find_one({"_id": files_id}) or doc
            await settle(self.uploads.delete_one({"_id": files_id}))
        except BaseException as exc:
            await self.cleanups.run(lease.release)
            if isinstance(exc, PyMongoError):
                raise storage_error(exc, f"completion of {upload_id} failed") from exc
            raise
        self.running_digests.forget(upload_id)
        return file_info_from_document(doc)

    async def terminate_upload(self, upload_id: str) -> None:
        """Deletes the record, unless an append holds its lease (:class:`UploadLocked`: the
        sweep must not end an upload whose expiry that append is moving), then the chunks.
        An append whose lease expired meanwhile finds the record gone and removes what it
        wrote after."""
        files_id, token = parse_upload_id(upload_id)
        now = datetime.now(timezone.utc)
        with driver_errors():
            deleted = await self.uploads.delete_one(
                {"_id": files_id, "token": token, "lease.until": {"$lt": now}}
            )
            if deleted.deleted_count == 0:
                _owned(
                    await self.uploads.find_one({"_id": files_id}, {"token": 1}), token, upload_id
                )
                raise UploadLocked(f"upload {files_id} is being written by another request")
            await self._discard_upload_chunks(files_id)
        self.running_digests.forget(upload_id)

    async def expired_uploads(self, now: datetime, limit: int = 1000) -> builtins.list[UploadState]:
        with driver_errors():
            cursor = self.uploads.find(
                {"expiresAt": {"$lt": now}},
                sort=[("expiresAt", ASCENDING)],
                limit=limit,
                batch_size=max(1, min(limit, 1000)),
            )
            records = [record async for record in cursor]
        # A record without a token is not one begin_upload wrote (the sweep judges its chunks).
        return [state_of(r) for r in records if isinstance(r.get("token"), str) and "name" in r]

    # -- helpers -------------------------------------------------------------------------

    async def _take_lease(
        self, upload_id: str, expires_at: datetime | None, *, writing: bool
    ) -> Lease:
        """The upload's lease, taken; :class:`UploadLocked` while another request holds it.
        ``writing``: the record is marked not ``clean`` until the append commits (a crash
        meanwhile may leave chunks past the offset); the lease's record says whether it was.
        """
        files_id, token = parse_upload_id(upload_id)
        lease = Lease(self, files_id, upload_id)
        now = datetime.now(timezone.utc)
        change: dict[str, Any] = {"lease": {"owner": lease.owner, "until": lease.until(now)}}
        if expires_at is not None:
            change["expiresAt"] = _millis(expires_at)
        if writing:
            change["clean"] = False
        try:
            before = await settle(
                self.uploads.find_one_and_update(
                    {"_id": files_id, "token": token, "lease.until": {"$lt": now}},
                    {"$set": change},
                    return_document=False,
                )
            )
            if before is None:
                _owned(
                    await self.uploads.find_one({"_id": files_id}, {"token": 1}), token, upload_id
                )
                raise UploadLocked(f"upload {files_id} is being written by another request")
        except PyMongoError as exc:
            raise storage_error(exc) from exc
        except asyncio.CancelledError:
            await self.cleanups.run(lease.release)  # taken, maybe: not held for a minute
            raise
        record = dict(_owned(before, token, upload_id))
        change.pop("clean", None)  # as it was: whether this append must look for leftovers
        record.update(change)
        lease.record = record
        lease.renewed = time.monotonic()
        return lease

    async def _discard_upload_chunks(self, files_id: ObjectId) -> None:
        """Deletes the chunks of an upload, unless a file owns them (a completed upload)."""
        if await self.files.find_one({"_id": files_id}, {"_id": 1}) is None:
            await self.chunks.delete_many({"files_id": files_id})

    async def _digests_of_chunks(self, files_id: ObjectId, length: int, size: int) -> UploadDigests:
        """md5 + sha256 of an upload's chunks read back, checking that they hold ``length``
        bytes in order (:class:`CorruptFile` otherwise)."""
        digests = UploadDigests()
        expected = read = 0
        cursor = self.chunks.find(
            {"files_id": files_id},
            {"_id": 0, "n": 1, "data": 1},
            sort=[("n", ASCENDING)],
            batch_size=max(1, self.read_ahead // size),
        )
        async for chunk in cursor:
            data = chunk.get("data")
            want = min(size, length - read)
            if chunk.get("n") != expected or not isinstance(data, bytes) or len(data) != want:
                raise CorruptFile(f"upload {files_id}: chunk {expected} is missing or wrong")
            digests.update(data)
            read += want
            expected += 1
        if read != length:
            raise CorruptFile(f"upload {files_id}: {read} of {length} bytes stored")
        return digests


def _owned(record: Mapping[str, Any] | None, token: str, upload_id: str) -> Mapping[str, Any]:
    """``record`` if its token is ``token``, else :class:`UploadNotFound` (no oracle)."""
    stored = record.get("token") if record is not None else None
    if not isinstance(stored, str) or not hmac.compare_digest(stored.encode(), token.encode()):
        raise UploadNotFound(upload_id)
    assert record is not None
    return record
