"""GridFS storage specifics: what is (not) left in the chunks collection, Motor databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gridserve.storage import FileNotFound, InvalidKey
from gridserve.storage.gridfs import GridFSStorage
from tests.test_storage_contract import pieces, read_all


async def test_aborted_save_leaves_no_orphan_chunks(async_db: Any) -> None:
    storage = GridFSStorage(async_db)
    storage.chunk_size = 1000

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
