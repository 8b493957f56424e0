"""GridFS storage specifics: what is (not) left in the chunks collection, Motor databases, and
what a read asks of the database."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient, monitoring

from gridserve.storage import CorruptFile, FileNotFound, InvalidKey
from gridserve.storage.gridfs import GridFSStorage, point_read_filter
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


async def test_a_range_read_again_fetches_its_chunks_by_id(
    watched: tuple[Any, CommandLog],
) -> None:
    db, log = watched
    storage = GridFSStorage(db, chunk_size=1000)
    data = os.urandom(10_000)
    info = await storage.save("a.bin", pieces(data))
    ids = await chunk_ids(db, info.id)

    log.commands.clear()
    assert await read_all(storage, info, 2500, 4500) == data[2500:4500]
    assert log.finds("fs.chunks") == [{"files_id": info.id, "n": {"$gte": 2, "$lte": 4}}]

    log.commands.clear()
    assert await read_all(storage, info, 2100, 4900) == data[2100:4900]
    assert log.finds("fs.chunks") == [{"_id": ids[2]}, {"_id": ids[3]}, {"_id": ids[4]}]

    log.commands.clear()  # chunk 5 was never read: the range goes by files_id/n again
    assert await read_all(storage, info, 4000, 6000) == data[4000:6000]
    assert log.finds("fs.chunks") == [{"files_id": info.id, "n": {"$gte": 4, "$lte": 5}}]


async def test_long_ranges_use_one_cursor_even_when_their_chunks_are_known(
    watched: tuple[Any, CommandLog],
) -> None:
    db, log = watched
    storage = GridFSStorage(db, chunk_size=1000, point_read_chunks=4)
    data = os.urandom(10_000)
    info = await storage.save("a.bin", pieces(data))
    assert await read_all(storage, info) == data
    log.commands.clear()
    assert await read_all(storage, info) == data
    assert log.finds("fs.chunks") == [{"files_id": info.id, "n": {"$gte": 0, "$lte": 9}}]
    log.commands.clear()
    assert await read_all(storage, info, 0, 4000) == data[:4000]  # 4 chunks: short enough
    assert len(log.finds("fs.chunks")) == 4


@pytest.mark.parametrize("rewrite", ["new ids", "ids swapped", "chunk gone"])
async def test_chunks_rewritten_behind_the_locator_are_read_right(
    watched: tuple[Any, CommandLog], rewrite: str
) -> None:
    db, log = watched
    storage = GridFSStorage(db, chunk_size=1000)
    data = os.urandom(5000)
    info = await storage.save("a.bin", pieces(data))
    assert await read_all(storage, info, 1000, 4000) == data[1000:4000]  # learns chunks 1-3
    chunks = db["fs.chunks"]
    if rewrite == "new ids":  # a repair tool re-inserting the same chunks
        docs = await chunks.find({"files_id": info.id}).to_list()
        await chunks.delete_many({"files_id": info.id})
        await chunks.insert_many([{**d, "_id": ObjectId()} for d in docs])
    elif rewrite == "ids swapped":  # the _id now known for chunk 2 holds chunk 3, and back
        ids = await chunk_ids(db, info.id)
        two, three = [await chunks.find_one({"_id": ids[n]}) for n in (2, 3)]
        await chunks.delete_many({"_id": {"$in": [ids[2], ids[3]]}})
        await chunks.insert_many([{**two, "_id": ids[3]}, {**three, "_id": ids[2]}])
    log.commands.clear()
    if rewrite == "chunk gone":
        await chunks.delete_one({"files_id": info.id, "n": 2})
        with pytest.raises(CorruptFile, match="chunk 2 is missing"):
            await read_all(storage, info, 1000, 4000)
        return
    assert await read_all(storage, info, 1000, 4000) == data[1000:4000]
    filters = log.finds("fs.chunks")
    assert "_id" in filters[0]  # tried the known ids first ...
    assert "files_id" in filters[-1]  # ... then read by range
    log.commands.clear()
    assert await read_all(storage, info, 1000, 4000) == data[1000:4000]
    assert all("_id" in f for f in log.finds("fs.chunks"))  # and learnt the new ids


async def test_file_documents_by_id_are_reused_for_their_cache_time(
    watched: tuple[Any, CommandLog],
) -> None:
    db, log = watched
    storage = GridFSStorage(db, file_cache_seconds=0.5)
    info = await storage.save("a.bin", pieces(b"x" * 10))
    key = str(info.id)
    log.commands.clear()
    assert (await storage.resolve(key)).filename == "a.bin"
    assert (await storage.resolve(key)).filename == "a.bin"
    assert len(log.finds("fs.files")) == 1
    await db["fs.files"].update_one({"_id": info.id}, {"$set": {"filename": "b.bin"}})
    assert (await storage.resolve(key)).filename == "a.bin"
    await asyncio.sleep(0.6)
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


def test_point_reads_name_the_shard_key_only_on_a_sharded_cluster() -> None:
    chunk_id, file_id = ObjectId(), ObjectId()
    assert point_read_filter(chunk_id, file_id, 7, sharded=False) == {"_id": chunk_id}
    assert point_read_filter(chunk_id, file_id, 7, sharded=True) == {
        "_id": chunk_id,
        "files_id": file_id,
        "n": 7,
    }


async def test_the_storage_sees_the_topology_the_driver_sees(async_db: Any) -> None:
    await async_db.command("ping")
    kind = async_db.client.topology_description.topology_type_name
    assert kind in {"Single", "ReplicaSetWithPrimary", "Sharded", "LoadBalanced"}
    assert GridFSStorage(async_db)._sharded() == (kind == "Sharded")


async def test_uploads_insert_their_chunks_in_batches(watched: tuple[Any, CommandLog]) -> None:
    db, log = watched
    storage = GridFSStorage(db, chunk_size=1000, insert_batch=4000)
    data = os.urandom(9500)
    log.commands.clear()
    info = await storage.save("a.bin", pieces(data))
    inserts = [len(c["documents"]) for c in log.commands if c.get("insert") == "fs.chunks"]
    assert inserts == [4, 4, 2]
    assert await read_all(storage, info) == data
