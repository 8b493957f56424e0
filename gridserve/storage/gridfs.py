"""GridFS storage on PyMongo's async API (or a Motor database, for apps that hold one).

Reads go straight to ``<bucket>.files`` and ``<bucket>.chunks`` rather than through
``AsyncGridOut``: one query for the file document, and for a byte range one cursor over exactly
the chunks ``start // chunkSize .. (stop - 1) // chunkSize``, so a seek to 90% costs what a
seek to 0 does (with the ``files_id_1_n_1`` index every driver creates). ``read`` iterates
one cursor, ``read_ahead`` bytes per reply, in a task one chunk ahead of its consumer (the chunk
cache, ``migrate``). ``read_buffers``, what the HTTP handler sends, hands over one reply at a
time (one flush each), fetched when the handler asks for the next: replies grow from
``read_ahead`` to ``max_reply`` while the client keeps up, one query each (a cursor's batch size
is fixed once it runs). A range that one reply carries is read without a task: there is nothing
to overlap.

Writes follow the GridFS spec: chunks first, the file document last (so no reader sees a file
before all its chunks exist), and on any failure the chunks written so far are deleted.
Resumable uploads (tus) keep that order across requests, processes and hosts: see
:mod:`gridserve.storage.gridfsuploads`.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Hashable, Mapping
from contextlib import aclosing
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError, PyMongoError

from gridserve.storage.base import (
    CorruptFile,
    Derived,
    FileExists,
    FileInfo,
    FileNotFound,
    InvalidKey,
    Storage,
    UploadDigests,
    check_key,
    copied_validators,
)
from gridserve.storage.gridfsdocs import (
    DEFAULT_CHUNK_SIZE,
    FILE_FIELDS,
    LISTING_SORT,
    file_info_from_document,
    listing_filter,
    new_file_document,
    object_id,
    revision_order,
)
from gridserve.storage.gridfserrors import driver_errors, storage_error
from gridserve.storage.gridfsuploads import DEFAULT_LEASE_SECONDS, GridFSResumableUploads
from gridserve.storage.lookups import FileDocumentCache
from gridserve.storage.onereply import ONE_REPLY_BYTES, find_one_reply
from gridserve.storage.readahead import read_ahead
from gridserve.storage.writes import Cleanups, settle

DEFAULT_READ_AHEAD = 512 * 1024  # per stream: bounds what a slow client makes us hold
DEFAULT_MAX_REPLY = 2 * 1024 * 1024  # what a fast client's replies grow to (read_buffers)
FAST_CONSUMER_SECONDS = 0.02  # a consumer back for more within this keeps up: replies grow
DEFAULT_FILE_CACHE_SECONDS = 5.0
DEFAULT_INSERT_BATCH = 2 * 1024 * 1024  # per upload: chunks held for one insert_many
ORPHAN_RETRY_SECONDS = 600.0
CLOSE_DRAIN_SECONDS = 10.0
log = logging.getLogger("gridserve.storage")


CHUNK_FIELDS = {"_id": 0, "n": 1, "data": 1}


def _chunks_filter(info: FileInfo, first: int, last: int) -> dict[str, Any]:
    """The chunks ``first..last`` of ``info``'s file (on the ``{files_id: 1, n: 1}`` index)."""
    return {"files_id": info.id, "n": {"$gte": first, "$lte": last}}


class _Pace:
    """Chunks per reply for one stream: ``low`` at first, doubling up to ``high`` once the
    consumer has kept up twice in a row (back within ``FAST_CONSUMER_SECONDS``: the first reply
    always is, the socket's buffer takes it whole), ``low`` again when it does not."""

    __slots__ = ("count", "high", "low", "streak")

    def __init__(self, bounds: tuple[int, int]) -> None:
        self.low, self.high = bounds
        self.count = self.low
        self.streak = 0

    def consumed(self, seconds: float) -> None:
        if seconds >= FAST_CONSUMER_SECONDS:
            self.count, self.streak = self.low, 0
            return
        self.streak += 1
        if self.streak >= 2:
            self.count = min(self.high, self.count * 2)


class GridFSStorage(GridFSResumableUploads, Storage):
    """Files in a GridFS bucket.

    ``database`` is a PyMongo ``AsyncDatabase`` or a Motor ``AsyncIOMotorDatabase``. The
    storage does not own the client unless ``owns_client`` is true (as when built by
    :meth:`from_uri`); then :meth:`close` closes it.

    Reading costs, per request: one query for the file document unless it was resolved by id
    in the last ``file_cache_seconds`` (0 disables that cache); then one cursor over the
    chunks of the range, ``read_ahead`` bytes per reply, iterated one chunk ahead of the
    client (so a stream holds at most about ``read_ahead`` plus two chunks). Chunks read again
    are best served from memory: see :mod:`gridserve.storage.cache`.

    Uploads insert their chunks ``insert_batch`` bytes at a time (one ``insert_many``), the
    file document last. Resumable uploads: records in ``<bucket>.uploads``, a lease of
    ``lease_seconds`` per append (:class:`GridFSResumableUploads`).
    """

    keeps_revisions = True

    def __init__(
        self,
        database: Any,
        bucket: str = "fs",
        *,
        read_ahead: int = DEFAULT_READ_AHEAD,
        max_reply: int = DEFAULT_MAX_REPLY,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        owns_client: bool = False,
        file_cache_seconds: float = DEFAULT_FILE_CACHE_SECONDS,
        insert_batch: int = DEFAULT_INSERT_BATCH,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        self.database = database
        self.bucket = bucket
        self.files = database[f"{bucket}.files"]
        self.chunks = database[f"{bucket}.chunks"]
        # Posters and other derived files: a collection of its own, never listed, never written
        # by an upload ({_id: "<file id>/<name>", files_id, name, source (ETag), data, type}).
        self.derived = database[f"{bucket}.derived"]
        self.read_ahead = read_ahead
        self.max_reply = max(read_ahead, max_reply)
        self.chunk_size = chunk_size
        self._owns_client = owns_client
        self._indexes_ready = False
        self.cleanups = Cleanups()
        self.file_cache: FileDocumentCache[FileInfo] = FileDocumentCache(file_cache_seconds)
        self.insert_batch = insert_batch
        self.lease_seconds = lease_seconds

    @classmethod
    def from_uri(
        cls,
        uri: str,
        bucket: str = "fs",
        *,
        default_database: str = "gridserve",
        file_cache_seconds: float = DEFAULT_FILE_CACHE_SECONDS,
        **options: Any,
    ) -> GridFSStorage:
        """A storage on its own ``AsyncMongoClient`` for ``uri`` (the URI's database, else
        ``default_database``). Client options (``serverSelectionTimeoutMS``, ...) pass through.
        """
        from pymongo import AsyncMongoClient

        if "serverselectiontimeoutms" not in uri.lower():  # the URI's own setting wins
            options.setdefault("serverSelectionTimeoutMS", 5000)
        options.setdefault("appname", "gridserve")
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, **options)
        database = client.get_default_database(default=default_database)
        return cls(database, bucket, owns_client=True, file_cache_seconds=file_cache_seconds)

    @property
    def description(self) -> str:
        return f"GridFS {self.database.name}.{self.bucket}"

    def cache_key(self, info: FileInfo) -> Hashable:
        """A file id names one immutable upload (chunks are never rewritten in place)."""
        return ("gridfs", self.database.name, self.bucket, info.id)

    # -- reading -------------------------------------------------------------------------

    async def resolve(self, key: str, revision: int | None = None) -> FileInfo:
        check_key(key)
        try:  # not driver_errors(): a try costs nothing on every request's path
            oid = object_id(key)
            if oid is not None:
                cached = self.file_cache.get(oid)
                if cached is not None:
                    return cached
                found = await find_one_reply(self.files, {"_id": oid}, FILE_FIELDS, {}, 1)
                if found:
                    info = file_info_from_document(found[0])
                    self.file_cache.put(oid, info)
                    return info
            doc = await self._find_revision(key, -1 if revision is None else revision)
        except PyMongoError as exc:
            raise storage_error(exc) from exc
        if doc is None:
            raise FileNotFound(key)
        info = file_info_from_document(doc)
        self.file_cache.put(info.id, info)
        return info

    async def _find_revision(self, filename: str, revision: int) -> Mapping[str, Any] | None:
        if revision >= 0:
            skip, order = revision, ASCENDING
        else:
            skip, order = -revision - 1, DESCENDING
        if skip > 2**31 - 1:
            return None
        found = await find_one_reply(
            self.files,
            {"filename": filename},
            FILE_FIELDS,
            {"uploadDate": order, "_id": order},
            1,
            skip,
        )
        return found[0] if found else None

    async def revisions(self, name: str) -> builtins.list[FileInfo]:
        check_key(name)
        with driver_errors():
            cursor = self.files.find(
                {"filename": name},
                FILE_FIELDS,
                sort=[("uploadDate", ASCENDING), ("_id", ASCENDING)],
            )
            return [file_info_from_document(doc) async for doc in cursor]

    async def read(
        self, info: FileInfo, start: int = 0, stop: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        # A task iterates the cursor one chunk ahead of the consumer (measured: a deeper queue
        # adds memory per stream, not throughput); a range one reply carries whole (a small
        # file, a player's probe) has nothing to overlap and is read in the consumer's task.
        pieces = self._pieces(info, start, stop)
        source = pieces if self._one_reply(info, start, stop) else read_ahead(pieces, 1)
        async with aclosing(source) as chunks:
            async for piece in chunks:
                yield piece

    def read_buffers(
        self, info: FileInfo, start: int = 0, stop: int | None = None
    ) -> AsyncGenerator[builtins.list[bytes | memoryview], None]:
        """The chunks of the range one database reply at a time (one flush per reply for the
        handler). A reply is fetched when the consumer asks for the next, in a task of its own
        unless the range fits one reply (so a consumer that leaves never cancels a query): a
        stream holds one reply, and its socket's send buffer, draining meanwhile, is what
        overlaps the fetch with the send. Replies start at ``read_ahead`` bytes and double, up
        to ``max_reply``, while the consumer comes back for the next within
        ``FAST_CONSUMER_SECONDS`` (a client that keeps up: fewer, larger round trips); a
        consumer that takes longer gets ``read_ahead`` again (a slow or stalled client holds
        little). (The generator of :meth:`_read_replies` itself, not one wrapping it: a small
        file's request pays for no extra generator layer.)"""
        if self._one_reply(info, start, stop):
            return self._read_replies(info, start, stop, None)
        return self._read_replies(info, start, stop, 0, _Pace(self._per_reply(info)))

    def _per_reply(self, info: FileInfo) -> tuple[int, int]:
        """Chunks per reply: at first, and at most when the consumer keeps up."""
        size = max(1, info.chunk_size)
        return max(1, self.read_ahead // size), max(1, self.max_reply // size)

    def _one_reply(self, info: FileInfo, start: int, stop: int | None) -> bool:
        """Whether one cursor reply carries the whole range."""
        size = info.chunk_size
        stop = info.length if stop is None else min(stop, info.length)
        if size <= 0 or start >= stop:
            return True
        return (stop - 1) // size - start // size < max(1, self.read_ahead // size)

    async def _pieces(
        self, info: FileInfo, start: int, stop: int | None
    ) -> AsyncGenerator[bytes, None]:
        async with aclosing(self._read_replies(info, start, stop, None)) as replies:
            async for pieces in replies:
                for piece in pieces:
                    yield piece  # type: ignore[misc]

    async def _read_replies(
        self,
        info: FileInfo,
        start: int,
        stop: int | None,
        depth: int | None,
        pace: _Pace | None = None,
    ) -> AsyncGenerator[builtins.list[bytes | memoryview], None]:
        """The range's bytes, the chunks of one database reply at a time, each chunk checked
        (its ``n`` in sequence, its length as ``info`` says). The replies are fetched in the
        caller's task (``depth`` None) or through :func:`read_ahead` (``depth`` replies ahead,
        0: on demand); one cursor for the range, or with ``pace``, one query per reply, sized
        by how fast the consumer comes back."""
        length = info.length
        stop = length if stop is None else min(stop, length)
        if start >= stop:
            return
        size = info.chunk_size
        if size <= 0:
            raise CorruptFile(f"file {info.id}: chunkSize {size}")
        first, last = start // size, (stop - 1) // size
        per_reply = max(1, self.read_ahead // size)
        if pace is None:
            batches = self._chunk_replies(info, first, last, per_reply)
        else:
            batches = self._paced_replies(info, first, last, pace)
        source = batches if depth is None else read_ahead(batches, depth)
        clock = asyncio.get_running_loop().time
        last_n = math.ceil(length / size) - 1
        expected = first
        try:  # as in resolve: every read's path
            async with aclosing(source) as replies:
                async for chunks in replies:
                    pieces: builtins.list[bytes | memoryview] = []
                    complete = True
                    short: CorruptFile | None = None
                    for chunk in chunks:
                        n, data = chunk.get("n"), chunk.get("data")
                        if n != expected or not isinstance(data, bytes):
                            complete = False  # chunk `expected` is missing: see below
                            break
                        want = size if n < last_n else length - size * last_n
                        if len(data) != want:
                            # The chunks before it go out first, as they would one by one.
                            short = CorruptFile(
                                f"file {info.id}: chunk {n} has {len(data)} bytes, expected {want}"
                            )
                            break
                        lo = start - n * size if n == first else 0
                        hi = stop - n * size if n == last else want
                        pieces.append(data if lo == 0 and hi == want else data[lo:hi])
                        expected += 1
                    if pieces:
                        taken = clock()
                        yield pieces
                        if pace is not None:
                            pace.consumed(clock() - taken)
                    if short is not None:
                        raise short
                    if not complete:
                        break
        except PyMongoError as exc:
            raise storage_error(exc) from exc
        if expected <= last:
            # A file deleted meanwhile is FileNotFound (a 404 before the first byte, a clean
            # abort after it); chunks missing from a file still stored are corruption.
            await self._check_still_stored(info)
            raise CorruptFile(f"file {info.id}: chunk {expected} is missing")

    async def _chunk_replies(
        self, info: FileInfo, first: int, last: int, per_reply: int
    ) -> AsyncGenerator[builtins.list[Mapping[str, Any]], None]:
        """The ``{n, data}`` documents of chunks ``first..last``, one cursor reply at a time
        (``per_reply`` chunks), on the files_id_1_n_1 index. (Fetching chunks read before by
        their _id, as a "chunk locator" did until the chunk cache came, spared FerretDB's
        SQLite backend a scan but cost MongoDB one query per chunk instead of one per range;
        chunks read again now come from the cache, not the database.) The cursor's limit is
        the range's chunk count, so the server closes it with its last reply (no
        ``killCursors`` round trip after a range read whole). (Raw batches, sliced without
        decoding, were measured: PyMongo copies a raw reply three times on its way, against
        once for a decoded ``data``, and cost four times the CPU per MiB.) Chunks that one
        reply carries come by one ``find`` command, without a cursor (:mod:`.onereply`)."""
        count = last - first + 1
        if count <= per_reply:
            chunks = await self._one_reply_of_chunks(info, first, last)
            if chunks:
                yield chunks
            return
        cursor = self.chunks.find(
            _chunks_filter(info, first, last),
            CHUNK_FIELDS,
            sort=[("n", ASCENDING)],
            batch_size=per_reply,
            limit=count,
        )
        try:
            while True:
                chunks = await cursor.to_list(per_reply)
                if not chunks:
                    return
                yield chunks
                if not cursor.alive:
                    return  # the server closed it with this reply: no call to find that out
        finally:
            await cursor.close()

    async def _one_reply_of_chunks(
        self, info: FileInfo, first: int, last: int
    ) -> builtins.list[Mapping[str, Any]]:
        """The ``{n, data}`` documents of chunks ``first..last``, all in one reply: by one
        ``find`` command (:mod:`.onereply`) when they fit :data:`ONE_REPLY_BYTES`, else by a
        cursor whose batch is the whole range (the server closes it with that reply)."""
        count = last - first + 1
        query = _chunks_filter(info, first, last)
        if count * info.chunk_size <= ONE_REPLY_BYTES:
            return await find_one_reply(self.chunks, query, CHUNK_FIELDS, {"n": ASCENDING}, count)
        cursor = self.chunks.find(
            query, CHUNK_FIELDS, sort=[("n", ASCENDING)], batch_size=count, limit=count
        )
        try:
            chunks: builtins.list[Mapping[str, Any]] = await cursor.to_list(count)
        finally:
            await cursor.close()
        return chunks

    async def _paced_replies(
        self, info: FileInfo, first: int, last: int, pace: _Pace
    ) -> AsyncGenerator[builtins.list[Mapping[str, Any]], None]:
        """Chunks ``first..last``, one query per reply of ``pace.count`` chunks (a cursor's
        batch size is fixed once it runs): the server answers each whole and closes it."""
        n = first
        while n <= last:
            count = min(pace.count, last - n + 1)
            chunks = await self._one_reply_of_chunks(info, n, n + count - 1)
            if chunks:
                yield chunks
            if len(chunks) < count:
                return  # a chunk is missing: the reader sees it
            n += count

    async def _check_still_stored(self, info: FileInfo) -> None:
        """Raises FileNotFound if ``info``'s file document is gone (deleted after it was
        resolved, or served from the cache): before the first byte, that is a 404."""
        self.file_cache.forget(info.id)
        with driver_errors():
            doc = await self.files.find_one({"_id": info.id}, {"_id": 1})
        if doc is None:
            raise FileNotFound(str(info.id))

    async def list(
        self, prefix: str = "", limit: int = 100, after: str = ""
    ) -> AsyncIterator[FileInfo]:
        """In name order from the ``{filename: 1, uploadDate: 1}`` index GridFS keeps: an index
        range scan (the prefix and the cursor are its bounds), no in-memory sort, stopping
        after ``limit`` names; each name's revisions are read to pick its newest (the last by
        ``(uploadDate, _id)``, as :meth:`resolve` picks it)."""
        found = 0
        with driver_errors():
            cursor = self.files.find(
                listing_filter(prefix, after),
                FILE_FIELDS,
                sort=LISTING_SORT,
                batch_size=max(16, min(limit + 1, 1000)),
            )
            try:
                newest: dict[str, Any] | None = None
                async for doc in cursor:
                    if newest is not None and doc.get("filename") != newest.get("filename"):
                        yield file_info_from_document(newest)
                        found += 1
                        if found >= limit:
                            return
                        newest = doc
                    elif newest is None or revision_order(doc) >= revision_order(newest):
                        newest = doc
                if newest is not None:
                    yield file_info_from_document(newest)
            finally:
                await cursor.close()

    async def ping(self) -> None:
        with driver_errors():
            await self.database.command("ping")

    # -- writing -------------------------------------------------------------------------

    async def _ensure_indexes(self) -> None:
        if self._indexes_ready:
            return
        await self.files.create_index([("filename", ASCENDING), ("uploadDate", ASCENDING)])
        await self.chunks.create_index([("files_id", ASCENDING), ("n", ASCENDING)], unique=True)
        self._indexes_ready = True

    async def save(
        self,
        name: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        original: FileInfo | None = None,
    ) -> FileInfo:
        check_key(name)
        if object_id(name) is not None:
            raise InvalidKey("a filename must not look like an ObjectId")
        keep_id = original is not None and isinstance(original.id, ObjectId)
        file_id = original.id if keep_id and original is not None else ObjectId()
        if keep_id:
            await self._claim_id(file_id)
        size = self.chunk_size
        digests = UploadDigests()
        buffer = bytearray()
        length = n = 0
        pending: list[dict[str, Any]] = []  # chunks inserted together, one round trip
        batch = max(1, self.insert_batch // size)
        self.cleanups.save_started()
        try:
            await self._ensure_indexes()
            async for piece in chunks:
                digests.update(piece)
                length += len(piece)
                buffer += piece
                while len(buffer) >= size:
                    pending.append({"files_id": file_id, "n": n, "data": bytes(buffer[:size])})
                    del buffer[:size]
                    n += 1
                    if len(pending) >= batch:
                        # settle: a cancelled insert still lands; the cleanup must see it
                        await settle(self.chunks.insert_many(pending, ordered=True))
                        pending = []
            if buffer:
                pending.append({"files_id": file_id, "n": n, "data": bytes(buffer)})
            if pending:
                await settle(self.chunks.insert_many(pending, ordered=True))
            doc = new_file_document(file_id, name, length, size, digests, metadata, content_type)
            if original is not None:
                kept = copied_validators(original, metadata, digests)
                doc.update(uploadDate=original.upload_date, metadata=kept.metadata)
                if kept.md5 is None:
                    del doc["md5"]  # as the original: its ETag came from id, length and date
                if not kept.metadata:
                    del doc["metadata"]  # as GridFSBucket stores a file without metadata
            await settle(self.files.insert_one(doc))
        except BaseException as exc:
            if isinstance(exc, DuplicateKeyError) and keep_id:
                # The id was taken meanwhile: what holds it is another file's, not ours to delete.
                raise FileExists(f"a file with id {file_id} exists") from exc
            await self.cleanups.run(lambda: self._discard_chunks(file_id))
            if isinstance(exc, PyMongoError):
                raise storage_error(exc, f"upload of {name} failed") from exc
            raise
        finally:
            self.cleanups.save_ended()
        return file_info_from_document(doc)

    async def _claim_id(self, file_id: ObjectId) -> None:
        """Makes ``file_id`` ready for a copy that keeps it: :class:`FileExists` if a file has
        it; chunks without a file (a copy killed mid-way) are orphans, deleted."""
        with driver_errors():
            if await self.files.find_one({"_id": file_id}, {"_id": 1}) is not None:
                raise FileExists(f"a file with id {file_id} exists")
            await self.chunks.delete_many({"files_id": file_id})

    async def _discard_chunks(self, file_id: ObjectId) -> None:
        """Deletes what an upload that failed wrote: its chunks, and its file document in case
        the failure came after that insert was sent (a cancellation, a lost reply). They are
        unreachable already or about to be; if the database is away too, a background task
        retries until it is back (and the sweep, :mod:`gridserve.sweep`, catches the rest)."""
        try:
            await self.files.delete_one({"_id": file_id})
            await self.chunks.delete_many({"files_id": file_id})
        except PyMongoError as exc:
            log.warning(
                "orphan chunks of %s kept for now (%s); retrying in background", file_id, exc
            )
            self.cleanups.spawn(self._discard_later(file_id))

    async def _discard_later(self, file_id: ObjectId) -> None:
        delay = 0.5
        deadline = time.monotonic() + ORPHAN_RETRY_SECONDS
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            try:
                await self.files.delete_one({"_id": file_id})
                await self.chunks.delete_many({"files_id": file_id})
            except PyMongoError:
                delay = min(delay * 2, 30.0)
                continue
            log.info("deleted the orphan chunks of %s", file_id)
            return
        log.error("gave up deleting the orphan chunks of %s (the sweep will)", file_id)

    async def delete(self, info: FileInfo) -> None:
        self.file_cache.forget(info.id)
        with driver_errors():
            result = await self.files.delete_one({"_id": info.id})
            await self.chunks.delete_many({"files_id": info.id})
        if result.deleted_count == 0:
            raise FileNotFound(str(info.id))
        await self.delete_derived(info)

    # -- derived data --------------------------------------------------------------------

    async def update_metadata(self, info: FileInfo, patch: Mapping[str, Any]) -> None:
        fields = {f"metadata.{key}": value for key, value in patch.items()}
        with driver_errors():
            result = await self.files.update_one({"_id": info.id}, {"$set": fields})
        self.file_cache.forget(info.id)
        if result.matched_count == 0:
            raise FileNotFound(str(info.id))

    async def put_derived(self, info: FileInfo, name: str, data: bytes, content_type: str) -> None:
        doc = {
            "files_id": info.id,
            "name": name,
            "source": str(info.etag),
            "contentType": content_type,
            "data": data,
        }
        with driver_errors():
            await self.derived.replace_one({"_id": f"{info.id}/{name}"}, doc, upsert=True)

    async def get_derived(self, info: FileInfo, name: str) -> Derived | None:
        with driver_errors():
            doc = await self.derived.find_one({"_id": f"{info.id}/{name}"})
        if doc is None or doc.get("source") != str(info.etag):
            return None
        return Derived(
            bytes(doc["data"]), str(doc.get("contentType") or "application/octet-stream")
        )

    async def delete_derived(self, info: FileInfo) -> None:
        with driver_errors():
            await self.derived.delete_many({"files_id": info.id})

    async def derived_names(self, info: FileInfo) -> builtins.list[str]:
        with driver_errors():
            return [
                str(doc["name"])
                async for doc in self.derived.find({"files_id": info.id}, {"name": 1})
            ]

    async def close(self) -> None:
        """Lets the uploads in flight end and their cleanups finish (at most
        ``CLOSE_DRAIN_SECONDS``), then closes the client if the storage owns it."""
        await self.cleanups.drain(CLOSE_DRAIN_SECONDS)
        if self._owns_client:
            await self.database.client.close()
