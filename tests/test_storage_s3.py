"""S3 storage specifics, against a real S3 server (s3proxy) on loopback."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiobotocore.session import get_session

from gridserve.storage import CorruptFile, FileNotFound, StorageUnavailable, from_uri
from gridserve.storage.s3 import S3Storage
from tests.dbserver import free_port
from tests.s3server import S3Proxy
from tests.test_storage_contract import pieces, read_all

MIB = 1024 * 1024


async def leftovers(server: S3Proxy, bucket: str) -> tuple[list[str], list[Any]]:
    async with get_session().create_client("s3", **server.client_options()) as s3:
        listing = await s3.list_objects_v2(Bucket=bucket)
        uploads = await s3.list_multipart_uploads(Bucket=bucket)
    keys = [o["Key"] for o in listing.get("Contents", []) if not o["Key"].endswith("/")]
    return keys, uploads.get("Uploads") or []


async def test_large_upload_is_multipart_and_reads_back(s3_server: S3Proxy, s3_bucket: str) -> None:
    data = os.urandom(11 * MIB + 123)
    storage = S3Storage(s3_bucket, "m", part_size=5 * MIB, **s3_server.client_options())
    try:
        saved = await storage.save("big.webm", pieces(data, 256 * 1024))
        assert saved.length == len(data)
        assert str(saved.etag).endswith('-3"')  # S3's own multipart ETag
        info = await storage.resolve("big.webm")
        assert info.etag == saved.etag
        assert (
            await read_all(storage, info, 5 * MIB - 10, 5 * MIB + 10)
            == data[5 * MIB - 10 : 5 * MIB + 10]
        )
        assert await read_all(storage, info) == data
    finally:
        await storage.close()


async def test_failed_multipart_upload_is_aborted(s3_server: S3Proxy, s3_bucket: str) -> None:
    storage = S3Storage(s3_bucket, part_size=5 * MIB, **s3_server.client_options())

    async def failing() -> AsyncIterator[bytes]:
        yield os.urandom(6 * MIB)  # one part gets uploaded
        raise ConnectionResetError("client went away")

    try:
        with pytest.raises(ConnectionResetError):
            await storage.save("partial.bin", failing())
        with pytest.raises(FileNotFound):
            await storage.resolve("partial.bin")
    finally:
        await storage.close()
    assert await leftovers(s3_server, s3_bucket) == ([], [])


async def test_prefix_isolates_keys(s3_server: S3Proxy, s3_bucket: str) -> None:
    a = S3Storage(s3_bucket, "a", **s3_server.client_options())
    b = S3Storage(s3_bucket, "b/", **s3_server.client_options())
    try:
        await a.save("x.txt", pieces(b"in a"))
        with pytest.raises(FileNotFound):
            await b.resolve("x.txt")
        assert [i.filename async for i in a.list()] == ["x.txt"]
    finally:
        await a.close()
        await b.close()
    assert (await leftovers(s3_server, s3_bucket))[0] == ["a/x.txt"]


async def test_replaced_object_is_detected_mid_read(s3_server: S3Proxy, s3_bucket: str) -> None:
    storage = S3Storage(s3_bucket, **s3_server.client_options())
    try:
        old = await storage.save("v.bin", pieces(b"old content"))
        await storage.save("v.bin", pieces(b"new content!"))
        with pytest.raises(CorruptFile):
            await read_all(storage, old)
    finally:
        await storage.close()


async def test_failed_if_match_tells_deleted_from_replaced(
    s3_server: S3Proxy, s3_bucket: str
) -> None:
    """Services answer a failed If-Match with 412 for a replaced object and, some of them, for
    a deleted one too (s3proxy and AWS say 404): a HeadObject tells the two apart."""
    storage = S3Storage(s3_bucket, **s3_server.client_options())
    try:
        old = await storage.save("v.bin", pieces(b"old content"))
        await storage.save("v.bin", pieces(b"new content!"))
        replaced = CorruptFile("v.bin: replaced since it was looked up")
        assert await storage._deleted_or(replaced, old) is replaced
        await storage.delete(await storage.resolve("v.bin"))
        assert isinstance(await storage._deleted_or(replaced, old), FileNotFound)
    finally:
        await storage.close()


async def test_unreachable_endpoint_and_missing_bucket(s3_server: S3Proxy) -> None:
    options = {**s3_server.client_options(), "endpoint_url": f"http://127.0.0.1:{free_port()}"}
    down = S3Storage("any", **options)
    missing = S3Storage("no-such-bucket", **s3_server.client_options())
    try:
        with pytest.raises(StorageUnavailable):
            await down.resolve("x")
        with pytest.raises(StorageUnavailable):
            await down.ping()
        with pytest.raises(StorageUnavailable):
            await missing.ping()
    finally:
        await down.close()
        await missing.close()


def test_s3_uri() -> None:
    storage = from_uri("s3://media/videos/hd", endpoint_url="http://127.0.0.1:9")
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix) == ("media", "videos/hd/")
