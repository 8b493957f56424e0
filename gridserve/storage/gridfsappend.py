"""One append to a GridFS resumable upload (:mod:`gridserve.storage.gridfsuploads`): the
lease it holds and the chunks it writes.

**Chunks** are written as the bytes arrive, under ``files_id``, ``insert_batch`` bytes per
``insert_many`` as :meth:`save` does; no file document exists until :meth:`complete_upload`
inserts it (so nothing is visible before, and completion is one insert). Invariant: the
chunks hold bytes ``[0, offset)`` exactly, except that the chunk holding the offset may
carry more bytes than the offset covers and chunks past it may exist (an append that died
between its writes and its offset update). Taking the lease for an append marks the record
not ``clean`` and the offset update marks it clean again, so an append after a crash (and
only then: on FerretDB that query scans) starts by deleting the chunks past the offset. It
reads the chunk holding the offset by its ``_id`` (``tailChunk`` in the record) cut to the
offset, and rewrites it *in place* (its first bytes never change), so a crash at any point
leaves ``[0, offset)`` intact.

**Lease.** An append (and a completion) first takes the record's lease in one
``find_one_and_update`` (free when ``lease.until`` is past): a second request, in this
process or any other on any host, gets :class:`UploadLocked`. A lease lasts
``lease_seconds``; it is renewed before a write once a third of it has gone, so a long
append keeps it and a crashed process holds it at most that long. No write is sent on a
lease with less than two thirds of its time left, which fences a stalled appender out
(hosts' clocks must agree to within a third of the lease). The offset update is
conditional on the lease, and releases it.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from bson import ObjectId
from pymongo.errors import PyMongoError

from gridserve.storage.base import CorruptFile, StorageError
from gridserve.storage.resumable import (
    HEAD_BYTES,
    Checksum,
    ChecksumMismatch,
    UploadConflict,
    UploadLocked,
    UploadNotFound,
)
from gridserve.storage.writes import settle

if TYPE_CHECKING:
    from gridserve.storage.gridfsuploads import GridFSResumableUploads

FREE = datetime(1970, 1, 1, tzinfo=timezone.utc)  # lease.until of a lease nobody holds
log = logging.getLogger("gridserve.storage")


class Lease:
    """One request's hold on an upload record."""

    def __init__(self, storage: GridFSResumableUploads, files_id: ObjectId, upload_id: str):
        self.storage = storage
        self.files_id = files_id
        self.upload_id = upload_id
        self.owner = uuid.uuid4().hex
        self.record: Mapping[str, Any] = {}
        self.renewed = 0.0
        self.released = False

    def until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.storage.lease_seconds)

    def mine(self) -> dict[str, Any]:
        return {"_id": self.files_id, "lease.owner": self.owner}

    async def fence(self) -> None:
        """Before a write: renews the lease once a third of it has gone; :class:`UploadLocked`
        if it was lost (expired and taken, or the upload terminated)."""
        if time.monotonic() - self.renewed < self.storage.lease_seconds / 3:
            return
        now = datetime.now(timezone.utc)
        result = await self.storage.uploads.update_one(
            self.mine(), {"$set": {"lease.until": self.until(now)}}
        )
        if result.matched_count == 0:
            await self.lost()
        self.renewed = time.monotonic()

    async def lost(self) -> None:
        """The lease is gone: if the upload was terminated meanwhile, what this request wrote
        is removed (:class:`UploadNotFound`), else another request holds it."""
        self.released = True
        if await self.storage.uploads.find_one({"_id": self.files_id}, {"_id": 1}) is None:
            await self.storage._discard_upload_chunks(self.files_id)
            raise UploadNotFound(self.upload_id)
        raise UploadLocked(f"upload {self.files_id}: the lease expired during the append")

    async def commit(self, change: dict[str, Any]) -> None:
        """Stores ``change`` (the new offset...) if the lease is still this request's, and
        releases it."""
        update = {"$set": {**change, "lease": {"owner": "", "until": FREE}}}
        result = await settle(self.storage.uploads.update_one(self.mine(), update))
        if result.matched_count == 0:
            await self.lost()
        self.released = True

    async def release(self) -> None:
        self.released = True
        try:
            await self.storage.uploads.update_one(
                self.mine(), {"$set": {"lease": {"owner": "", "until": FREE}}}
            )
        except PyMongoError as exc:  # it expires by itself
            log.warning("lease of upload %s not released (%s)", self.files_id, exc)


class Append:
    """One ``append_upload``: bytes from the stored offset on, into chunks, under a lease."""

    def __init__(
        self,
        storage: GridFSResumableUploads,
        lease: Lease,
        total: int | None,
        checksum: Checksum | None,
    ) -> None:
        record = lease.record
        self.storage, self.lease, self.total = storage, lease, total
        self.files_id = record["_id"]
        self.size = int(record["chunkSize"])
        self.start = int(record["offset"])
        self.head = bytes(record.get("head") or b"")
        self.first, tail = divmod(self.start, self.size)  # the chunk holding the offset
        self.tail_len = tail  # its bytes below the offset (0: it is not stored yet)
        self.tail = b""
        self.tail_id: Any = None  # its _id
        self.last_id: Any = None  # the _id of the last chunk written
        self.checksum = checksum.hasher() if checksum is not None else None
        self.expected = checksum.digest if checksum is not None else b""
        self.digests = storage.running_digests.at(lease.upload_id, self.start)
        self.received = 0
        self.buffer = bytearray()
        self.n = self.first  # the chunk ``buffer`` fills
        self.pending: list[dict[str, Any]] = []
        self.prepared = False  # the buffer starts with the tail: salvage() may write it
        self.record: Mapping[str, Any] = record  # the record once committed

    async def run(self, chunks: AsyncIterable[bytes]) -> None:
        await self._prepare()
        failure: Exception | None = None
        iterator: AsyncIterator[bytes] = aiter(chunks)
        while True:
            try:
                piece = await anext(iterator)
            except StopAsyncIteration:
                break
            except Exception as exc:  # the client went away: keep what came (no checksum)
                failure = exc
                break
            if self.total is not None and self.start + self.received + len(piece) > self.total:
                failure = UploadConflict(f"bytes past the length {self.total}")
                piece = piece[: self.total - self.start - self.received]
            await self._take(piece)
            if failure is not None:
                break
        if self.checksum is not None and (
            failure is not None or not hmac.compare_digest(self.checksum.digest(), self.expected)
        ):
            await self._restore()
            await self.lease.release()
            raise failure or ChecksumMismatch(f"upload {self.files_id}: checksum mismatch")
        await self._flush(final=True)
        await self._commit()
        if failure is not None:
            raise failure

    async def _prepare(self) -> None:
        """Removes chunks past the offset (a crashed append's: only when the last append did
        not commit) and reads the tail chunk (by its ``_id``, kept in the record)."""
        chunks = self.storage.chunks
        if not self.lease.record.get("clean"):
            past = {"$gt": self.first} if self.tail_len else {"$gte": self.first}
            await chunks.delete_many({"files_id": self.files_id, "n": past})
        if self.tail_len:
            known = self.lease.record.get("tailChunk")
            doc = await chunks.find_one(
                {"_id": known}
                if known is not None
                else {"files_id": self.files_id, "n": self.first}
            )
            data = doc.get("data") if doc is not None else None
            if (
                doc is None
                or (doc.get("files_id"), doc.get("n")) != (self.files_id, self.first)
                or not isinstance(data, bytes)
                or len(data) < self.tail_len
            ):
                raise CorruptFile(f"upload {self.files_id}: chunk {self.first} is missing or short")
            self.tail_id = doc["_id"]
            self.tail = data[: self.tail_len]
            self.buffer += self.tail
        self.prepared = True

    async def _take(self, piece: bytes) -> None:
        if not piece:
            return
        if self.checksum is not None:
            self.checksum.update(piece)
        if self.digests is not None:
            self.digests.update(piece)
        if len(self.head) < HEAD_BYTES:
            self.head += piece[: HEAD_BYTES - len(self.head)]
        self.received += len(piece)
        self.buffer += piece
        await self._flush(final=False)

    async def _flush(self, *, final: bool) -> None:
        """Writes the full chunks in the buffer once a batch is pending (``final``: all of
        them, and the partial last chunk)."""
        size = self.size
        batch = max(1, self.storage.insert_batch // size)
        while len(self.buffer) >= size or (final and self.buffer):
            data = bytes(self.buffer[:size])
            if self.n == self.first and self.tail_len:
                # The stored tail chunk: rewritten in place, its first bytes unchanged.
                await self.lease.fence()
                await settle(
                    self.storage.chunks.update_one({"_id": self.tail_id}, {"$set": {"data": data}})
                )
                self.last_id = self.tail_id
            else:
                self.last_id = ObjectId()
                self.pending.append(
                    {"_id": self.last_id, "files_id": self.files_id, "n": self.n, "data": data}
                )
            # Only now: a cancelled write leaves the chunk in the buffer for salvage().
            del self.buffer[:size]
            self.n += 1
            if len(self.pending) >= batch:
                await self._insert_pending()
        if final and self.pending:
            await self._insert_pending()

    async def _insert_pending(self) -> None:
        await self.lease.fence()
        await settle(self.storage.chunks.insert_many(self.pending, ordered=True))
        self.pending = []

    async def salvage(self) -> None:
        """After a cancellation (a shutdown) with no checksum: keeps what was received, as
        when the client goes away. Chunks of a batch whose insert was cut are inserted
        again (deleted first: it may have landed). Best effort: the lease is the caller's
        to release if this fails."""
        if not self.prepared or self.lease.released:
            return
        try:
            if self.pending:
                past = {"$gte": self.pending[0]["n"]}
                await self.storage.chunks.delete_many({"files_id": self.files_id, "n": past})
            await self._flush(final=True)
            await self._commit()
        except (PyMongoError, StorageError) as exc:
            log.warning("upload %s: bytes of a cancelled append not kept (%s)", self.files_id, exc)

    async def _restore(self) -> None:
        """Discards this append's bytes: chunks past the offset deleted, the tail put back
        (unless the lease was lost: they are then another request's)."""
        self.pending = []
        await self.lease.fence()
        chunks = self.storage.chunks
        past = {"$gt": self.first} if self.tail_len else {"$gte": self.first}
        await settle(chunks.delete_many({"files_id": self.files_id, "n": past}))
        if self.tail_len:
            await settle(chunks.update_one({"_id": self.tail_id}, {"$set": {"data": self.tail}}))

    async def _commit(self) -> None:
        offset = self.start + self.received
        # The chunk holding the new offset, if it is partial: the last one written.
        tail_id = self.last_id if offset % self.size else None
        change = {"offset": offset, "length": self.total, "head": self.head}
        await self.lease.commit({**change, "clean": True, "tailChunk": tail_id})
        upload_id = self.lease.upload_id
        if self.digests is not None:
            self.storage.running_digests.store(upload_id, offset, self.digests)
        else:
            self.storage.running_digests.forget(upload_id)
        self.record = dict(self.lease.record, **change)
