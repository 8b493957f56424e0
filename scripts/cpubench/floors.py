"""The driver's floors, measured in the bench's own process (``time.process_time``): what
PyMongo alone, no HTTP, spends on the work a server does per MiB and per request.

- full download: a cursor over ``fs.chunks`` reading the file's chunks in order, per MiB;
- small file: the file document by name, then its one chunk, per file;
- upload: ``upload_from_stream`` plus the MD5 and SHA-256 gridserve stores, per MiB.

Each is one measurement (a client of its own, warmed up): a round of the bench takes one of
each, beside the servers' figures of the same round.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from scripts.benchdata import SMALL_COUNT
from scripts.benchtools import CHUNK, MIB


async def read_floor(uri: str, db_name: str, filename: str) -> tuple[float, float]:
    """(MiB/s, CPU ms per MiB) of the async driver reading a file's chunks in order."""
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    db = client[db_name]
    doc = await db["fs.files"].find_one({"filename": filename})
    assert doc is not None

    async def read() -> int:
        total = 0
        cursor = db["fs.chunks"].find(
            {"files_id": doc["_id"]}, {"data": 1, "_id": 0}, sort=[("n", 1)], batch_size=16
        )
        async for chunk in cursor:
            total += len(chunk["data"])
        return total

    await read()
    cpu, wall = time.process_time(), time.perf_counter()
    total = await read()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await client.close()
    return total / MIB / wall, cpu * 1000 / (total / MIB)


async def small_floor(uri: str, db_name: str, count: int) -> float:
    """CPU ms per file of the async driver looking a small file up by name and reading it,
    ``count`` files after each was read once."""
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    db = client[db_name]

    async def one(i: int) -> None:
        doc = await db["fs.files"].find_one(
            {"filename": f"small/{i % SMALL_COUNT}.bin"}, sort=[("uploadDate", -1)]
        )
        assert doc is not None
        async for _ in db["fs.chunks"].find({"files_id": doc["_id"]}, sort=[("n", 1)]):
            pass

    for i in range(SMALL_COUNT):
        await one(i)
    cpu = time.process_time()
    for i in range(count):
        await one(i)
    cpu = time.process_time() - cpu
    await client.close()
    return cpu * 1000 / count


async def upload_floor(uri: str, db_name: str, data: bytes) -> float:
    """CPU ms per MiB of ``upload_from_stream`` plus the MD5 and SHA-256 of the same bytes."""
    from gridfs import AsyncGridFSBucket
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    bucket = AsyncGridFSBucket(client[db_name], chunk_size_bytes=CHUNK)
    cpu = time.process_time()
    file_id = await bucket.upload_from_stream("floor.bin", data)
    hashlib.md5(data, usedforsecurity=False).hexdigest()
    hashlib.sha256(data).hexdigest()
    cpu = time.process_time() - cpu
    await bucket.delete(file_id)  # the in-memory database keeps no round's bytes
    await client.close()
    return cpu * 1000 / (len(data) / MIB)
