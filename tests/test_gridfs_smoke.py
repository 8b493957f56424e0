"""GridFS itself works on the test database, through PyMongo's async API (AsyncGridFSBucket).

FerretDB v1 was never tested upstream with GridFS; these prove the operations gridserve relies
on before anything of ours is involved.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from gridfs import AsyncGridFSBucket
from gridfs.errors import NoFile

CHUNK_SIZES = [1, 1000, 16 * 1024, 255 * 1024]


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
@pytest.mark.parametrize("length_in_chunks", [0, 1, 3, 3.5])
async def test_upload_and_download_whole(
    async_db: Any, chunk_size: int, length_in_chunks: float
) -> None:
    length = min(int(chunk_size * length_in_chunks), 600_000)
    if chunk_size == 1:
        length = int(length_in_chunks * 4)
    data = os.urandom(length)
    bucket = AsyncGridFSBucket(async_db, chunk_size_bytes=chunk_size)
    file_id = await bucket.upload_from_stream("smoke.bin", data)

    stream = await bucket.open_download_stream(file_id)
    assert await stream.read() == data
    doc = await async_db["fs.files"].find_one({"_id": file_id})
    assert doc["length"] == length
    assert doc["chunkSize"] == chunk_size
    expected_chunks = -(-length // chunk_size)
    assert await async_db["fs.chunks"].count_documents({"files_id": file_id}) == expected_chunks


async def test_exact_multiple_of_chunk_size_has_no_empty_chunk(async_db: Any) -> None:
    bucket = AsyncGridFSBucket(async_db, chunk_size_bytes=1024)
    file_id = await bucket.upload_from_stream("exact.bin", b"x" * 4096)
    chunks = [c async for c in async_db["fs.chunks"].find({"files_id": file_id}).sort("n", 1)]
    assert [c["n"] for c in chunks] == [0, 1, 2, 3]
    assert all(len(c["data"]) == 1024 for c in chunks)


async def test_seek_and_read_from_the_middle(async_db: Any) -> None:
    data = os.urandom(100_000)
    bucket = AsyncGridFSBucket(async_db, chunk_size_bytes=4096)
    file_id = await bucket.upload_from_stream("seek.bin", data)
    stream = await bucket.open_download_stream(file_id)
    await stream.seek(54_321)
    assert await stream.read(10_000) == data[54_321:64_321]
    await stream.seek(99_990)
    assert await stream.read() == data[99_990:]


async def test_find_by_name_and_revision(async_db: Any) -> None:
    bucket = AsyncGridFSBucket(async_db, chunk_size_bytes=1024)
    for version in range(3):
        await bucket.upload_from_stream("show/ep1.webm", f"v{version}".encode())

    async def read(revision: int) -> bytes:
        stream = await bucket.open_download_stream_by_name("show/ep1.webm", revision=revision)
        return bytes(await stream.read())

    assert await read(-1) == b"v2"
    assert await read(-2) == b"v1"
    assert await read(0) == b"v0"
    assert await read(2) == b"v2"
    with pytest.raises(NoFile):
        await read(3)
    names = [grid_out.filename async for grid_out in bucket.find({"filename": "show/ep1.webm"})]
    assert names == ["show/ep1.webm"] * 3


async def test_rename(async_db: Any) -> None:
    bucket = AsyncGridFSBucket(async_db)
    file_id = await bucket.upload_from_stream("old name.mp3", b"abc")
    await bucket.rename(file_id, "new name.mp3")
    stream = await bucket.open_download_stream_by_name("new name.mp3")
    assert await stream.read() == b"abc"
    with pytest.raises(NoFile):
        await bucket.open_download_stream_by_name("old name.mp3")


async def test_delete_leaves_no_chunks(async_db: Any) -> None:
    bucket = AsyncGridFSBucket(async_db, chunk_size_bytes=1000)
    keep = await bucket.upload_from_stream("keep", os.urandom(5000))
    gone = await bucket.upload_from_stream("gone", os.urandom(5000))
    await bucket.delete(gone)
    assert await async_db["fs.chunks"].count_documents({"files_id": gone}) == 0
    assert await async_db["fs.files"].count_documents({"_id": gone}) == 0
    assert await async_db["fs.chunks"].count_documents({"files_id": keep}) == 5
    with pytest.raises(NoFile):
        await bucket.open_download_stream(gone)
