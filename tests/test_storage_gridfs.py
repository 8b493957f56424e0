"""GridFS storage specifics: what is (not) left in the chunks collection, Motor databases, and
what a read asks of the database."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from gridserve.storage import CorruptFile, FileNotFound, InvalidKey
from gridserve.storage.gridfs import GridFSStorage
from tests.test_storage_contract import pieces, read_all


async def test_aborted_save_leaves_no_orphan_chunks(async_db: Any) -> None:
    storage = GridFSStorage(async_db, chunk_size=1000, insert_batch=2000)

    async def failing() -> AsyncIterator[bytes]:
        yield b"x" * 5500
        raise ConnectionResetError

    with pytest.raises(ConnectionResetError):
        await storage.save("partial.bin", failing())
    assert await async_db["fs.chunks"].count_documents({}) == 0
    assert await async_db["fs.files"].count_documents({}) == 0


async def test_save_writes_a_standard_gridfs_file(async_db: Any) -> None:
    from gridfs import AsyncGridFSBucket

    storage = GridFSStorage(async_db, bucket="media", chunk_size=1024)
    info = await storage.save("a.mp3", pieces(b"y" * 5000), content_type="audio/mpeg")
    stream = await AsyncGridFSBucket(async_db, "media").open_download_stream(info.id)
    assert await stream.read() == b"y" * 5000
    doc = await async_db["media.files"].find_one({"_id": info.id})
    assert doc["contentType"] == "audio/mpeg" and doc["chunkSize"] == 1024
    assert await async_db["media.chunks"].count_documents({"files_id": info.id}) == 5
    await storage.delete(info)
    assert await async_db["media.chunks"].count_documents({"files_id": info.id}) == 0


async def test_names_that_look_like_ids_are_refused_on_save(async_db: Any) -> None:
    storage = GridFSStorage(async_db)
    with pytest.raises(InvalidKey):
        await storage.save("0123456789abcdef01234567", pieces(b"x"))


async def test_motor_database_reads_and_writes(mongo_uri: str, db_name: str) -> None:
    motor_asyncio = pytest.importorskip("motor.motor_asyncio")
    client = motor_asyncio.AsyncIOMotorClient(mongo_uri)
    try:
        storage = GridFSStorage(client[db_name])
        info = await storage.save("m.bin", pieces(b"motor" * 1000))
        resolved = await storage.resolve("m.bin")
        assert await read_all(storage, resolved, 5, 15) == (b"motor" * 1000)[5:15]
        await storage.delete(resolved)
        with pytest.raises(FileNotFound):
            await storage.resolve(str(info.id))
    finally:
        client.close()


# -- what a read asks the database (seen by PyMongo's command monitoring) ----------------------


class CommandLog(monitoring.CommandListener):
    """The commands a client sent, as the driver reports them."""

    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def finds(self, collection: str) -> list[dict[str, Any]]:
        """The filters of the finds on ``collection``."""
        return [dict(c["filter"]) for c in self.commands if c.get("find") == collection]


@pytest.fixture
async def watched(mongo_uri: str, db_name: str) -> AsyncIterator[tuple[Any, CommandLog]]:
    log = CommandLog()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, event_listeners=[log])
    yield client[db_name], log
    await client.close()


async def chunk_ids(db: Any, file_id: Any) -> dict[int, Any]:
    return {c["n"]: c["_id"] async for c in db["fs.chunks"].find({"files_id": file_id})}


async def test_every_range_is_one_query_on_the_files_id_n_index(
    watched: tuple[Any, CommandLog],
) -> None:
    """Read again or not, short or long, a range costs one query on ``files_id_1_n_1`` (the
    path MongoDB indexes; repeated reads are the chunk cache's job, not extra queries)."""
    db, log = watched
    storage = GridFSStorage(db, chunk_size=1000)
    data = os.urandom(10_000)
    info = await storage.save("a.bin", pieces(data))
    for start, stop, first, last in ((2500, 4500, 2, 4), (2100, 4900, 2, 4), (0, 10_000, 0, 9)):
        for _ in range(2):
            log.commands.clear()
            assert await read_all(storage, info, start, stop) == data[start:stop]
            assert log.finds("fs.chunks") == [
                {"files_id": info.id, "n": {"$gte": first, "$lte": last}}
            ]


async def test_a_missing_chunk_is_a_corrupt_file(watched: tuple[Any, CommandLog]) -> None:
    db, _ = watched
    storage = GridFSStorage(db, chunk_size=1000)
    data = os.urandom(5000)
    info = await storage.save("a.bin", pieces(data))
    assert await read_all(storage, info, 1000, 4000) == data[1000:4000]
    await db["fs.chunks"].delete_one({"files_id": info.id, "n": 2})
    with pytest.raises(CorruptFile, match="chunk 2 is missing"):
        await read_all(storage, info, 1000, 4000)


async def test_file_documents_by_id_are_reused_for_their_cache_time(
    watched: tuple[Any, CommandLog],
) -> None:
    db, log = watched
    # Long enough for the two lookups and the update below on a loaded machine
    storage = GridFSStorage(db, file_cache_seconds=2.0)
    info = await storage.save("a.bin", pieces(b"x" * 10))
    key = str(info.id)
    log.commands.clear()
    assert (await storage.resolve(key)).filename == "a.bin"
    assert (await storage.resolve(key)).filename == "a.bin"
    assert len(log.finds("fs.files")) == 1
    await db["fs.files"].update_one({"_id": info.id}, {"$set": {"filename": "b.bin"}})
    assert (await storage.resolve(key)).filename == "a.bin"
    await asyncio.sleep(2.1)
    assert (await storage.resolve(key)).filename == "b.bin"
    assert len(log.finds("fs.files")) == 2
    await storage.delete(await storage.resolve(key))
    with pytest.raises(FileNotFound):
        await storage.resolve(key)

    uncached = GridFSStorage(db, file_cache_seconds=0)
    other = await uncached.save("c.bin", pieces(b"y"))
    log.commands.clear()
    for _ in range(3):
        await uncached.resolve(str(other.id))
    assert len(log.finds("fs.files")) == 3


async def test_uploads_insert_their_chunks_in_batches(watched: tuple[Any, CommandLog]) -> None:
    db, log = watched
    storage = GridFSStorage(db, chunk_size=1000, insert_batch=4000)
    data = os.urandom(9500)
    log.commands.clear()
    info = await storage.save("a.bin", pieces(data))
    inserts = [len(c["documents"]) for c in log.commands if c.get("insert") == "fs.chunks"]
    assert inserts == [4, 4, 2]
    assert await read_all(storage, info) == data


# -- read_buffers: what the handler sends, one database reply at a time ------------------------


async def buffers(
    storage: GridFSStorage, info: Any, start: int, stop: int | None, pause: float = 0.0
) -> list[list[bytes]]:
    """Every list ``read_buffers`` yields (as bytes), the consumer taking ``pause`` s each."""
    found: list[list[bytes]] = []
    async for pieces_of_reply in storage.read_buffers(info, start, stop):
        found.append([bytes(piece) for piece in pieces_of_reply])
        await asyncio.sleep(pause)
    return found


async def test_read_buffers_grow_while_the_consumer_keeps_up(
    watched: tuple[Any, CommandLog],
) -> None:
    """A consumer back at once gets replies of 2, 2, 4, 8 chunks, up to ``max_reply``, each one
    query for exactly its chunks; one that takes its time gets ``read_ahead`` each time (what
    a slow or stalled client makes the server hold); the bytes are those of ``read``."""
    db, log = watched
    storage = GridFSStorage(db, chunk_size=1000, read_ahead=2000, max_reply=8000)
    data = os.urandom(30_500)
    info = await storage.save("a.bin", pieces(data))
    log.commands.clear()
    fast = await buffers(storage, info, 500, None)
    assert [len(reply) for reply in fast] == [2, 2, 4, 8, 8, 7]
    assert b"".join(b"".join(reply) for reply in fast) == data[500:]
    assert [f["n"] for f in log.finds("fs.chunks")] == [
        {"$gte": 0, "$lte": 1},
        {"$gte": 2, "$lte": 3},
        {"$gte": 4, "$lte": 7},
        {"$gte": 8, "$lte": 15},
        {"$gte": 16, "$lte": 23},
        {"$gte": 24, "$lte": 30},
    ]
    slow = await buffers(storage, info, 0, 9000, pause=0.1)
    assert [len(reply) for reply in slow] == [2, 2, 2, 2, 1]
    assert b"".join(b"".join(reply) for reply in slow) == data[:9000]
    assert await read_all(storage, info, 500, None) == data[500:]


async def test_read_buffers_send_what_precedes_a_bad_chunk_then_raise(
    watched: tuple[Any, CommandLog],
) -> None:
    db, _ = watched
    storage = GridFSStorage(db, chunk_size=1000, read_ahead=4000)
    data = os.urandom(6000)
    info = await storage.save("a.bin", pieces(data))
    await db["fs.chunks"].update_one({"files_id": info.id, "n": 2}, {"$set": {"data": b"x"}})
    got: list[bytes] = []
    with pytest.raises(CorruptFile, match="chunk 2 has 1 bytes"):
        async for pieces_of_reply in storage.read_buffers(info, 0, None):
            got += [bytes(piece) for piece in pieces_of_reply]
    assert b"".join(got) == data[:2000]
    await db["fs.chunks"].delete_one({"files_id": info.id, "n": 2})
    got = []
    with pytest.raises(CorruptFile, match="chunk 2 is missing"):
        async for pieces_of_reply in storage.read_buffers(info, 500, None):
            got += [bytes(piece) for piece in pieces_of_reply]
    assert b"".join(got) == data[500:2000]
