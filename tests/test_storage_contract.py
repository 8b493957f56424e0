"""The storage contract (gridserve/storage/base.py), run against every backend."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

import pytest

from gridserve.storage import (
    FileInfo,
    FileNotFound,
    InvalidKey,
    Storage,
)
from tests.conftest import BACKENDS, CACHED_BACKENDS

pytestmark = pytest.mark.parametrize(
    "backend", [*BACKENDS, *CACHED_BACKENDS, "fallback"], indirect=True
)

DATA = os.urandom(300_000)


@pytest.fixture
async def storage(make_storage: Callable[[], Storage]) -> AsyncIterator[Storage]:
    instance = make_storage()
    yield instance
    await instance.close()


async def pieces(data: bytes, size: int = 7000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
        await asyncio.sleep(0)


async def read_all(
    storage: Storage, info: FileInfo, start: int = 0, stop: int | None = None
) -> bytes:
    return b"".join([chunk async for chunk in storage.read(info, start, stop)])


async def test_save_then_resolve_by_id_and_name(storage: Storage) -> None:
    saved = await storage.save(
        "show/ep1.webm", pieces(DATA), content_type="video/webm", metadata={"owner": "ann"}
    )
    assert saved.length == len(DATA)
    assert saved.md5 == hashlib.md5(DATA, usedforsecurity=False).hexdigest()
    assert saved.metadata["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert saved.metadata["owner"] == "ann"
    assert saved.content_type == "video/webm"
    assert saved.upload_date.tzinfo is not None
    for key in (str(saved.id), "show/ep1.webm"):
        info = await storage.resolve(key)
        assert (info.id, info.length, info.md5) == (saved.id, saved.length, saved.md5)
        assert info.etag == saved.etag
    assert await read_all(storage, saved) == DATA


async def test_ranges_at_every_boundary(storage: Storage) -> None:
    info = await storage.save("r.bin", pieces(DATA))
    block = info.chunk_size or 1
    points = sorted({0, 1, block - 1, block, block + 1, 2 * block, len(DATA) - 1, len(DATA)} - {-1})
    for start in points:
        for stop in points:
            if start <= stop <= len(DATA):
                assert await read_all(storage, info, start, stop) == DATA[start:stop], (start, stop)
    assert await read_all(storage, info, 10, 10**12) == DATA[10:]


async def test_zero_length_file(storage: Storage) -> None:
    info = await storage.save("empty", pieces(b""))
    assert info.length == 0
    assert await read_all(storage, await storage.resolve("empty")) == b""


async def test_newest_revision_wins(storage: Storage) -> None:
    for version in (b"one", b"two", b"three"):
        await storage.save("song.ogg", pieces(version))
    newest = await storage.resolve("song.ogg")
    assert await read_all(storage, newest) == b"three"
    assert await read_all(storage, await storage.resolve("song.ogg", -1)) == b"three"
    with pytest.raises(FileNotFound):
        await storage.resolve("song.ogg", 5)


async def test_revisions_where_kept(storage: Storage, backend: str) -> None:
    for version in (b"one", b"two"):
        await storage.save("song.ogg", pieces(version))
    oldest = await read_all(storage, await storage.resolve("song.ogg", 0))
    # GridFS keeps every revision; local disk keeps the newest only (rev 0 names it too).
    assert oldest == (b"one" if backend.endswith("gridfs") else b"two")


async def test_delete(storage: Storage) -> None:
    info = await storage.save("gone.bin", pieces(b"bye"))
    keep = await storage.save("keep.bin", pieces(b"stay"))
    await storage.delete(info)
    with pytest.raises(FileNotFound):
        await storage.resolve("gone.bin")
    with pytest.raises(FileNotFound):
        await storage.delete(info)
    assert await read_all(storage, await storage.resolve(str(keep.id))) == b"stay"


async def test_list_with_prefix_and_limit(storage: Storage) -> None:
    for name in ("a/1.mp3", "a/2.mp3", "b/1.mp3"):
        await storage.save(name, pieces(b"x"))
    names = [info.filename async for info in storage.list("a/")]
    assert names == ["a/1.mp3", "a/2.mp3"]
    assert [info.filename async for info in storage.list(limit=2)] == ["a/1.mp3", "a/2.mp3"]
    assert [info.filename async for info in storage.list("zzz")] == []


async def test_aborted_save_leaves_nothing(storage: Storage) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"x" * 100_000
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await storage.save("partial.bin", failing())
    with pytest.raises(FileNotFound):
        await storage.resolve("partial.bin")
    assert [info.filename async for info in storage.list()] == []


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("", InvalidKey),
        ("a\x00b", InvalidKey),
        ("x" * 2000, InvalidKey),
        ("nothing-here", FileNotFound),
    ],
)
async def test_hostile_keys(storage: Storage, key: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        await storage.resolve(key)


async def test_unknown_object_id_is_not_found(storage: Storage) -> None:
    with pytest.raises(FileNotFound):
        await storage.resolve("0123456789abcdef01234567")


async def test_early_close_of_a_read(storage: Storage) -> None:
    info = await storage.save("big.bin", pieces(DATA))
    reader = storage.read(info)
    first = await reader.__anext__()
    assert DATA.startswith(first)
    await reader.aclose()
    assert await read_all(storage, info, 0, 5) == DATA[:5]


async def test_deleted_between_lookup_and_read_is_not_found(
    storage: Storage, make_storage: Callable[[], Storage]
) -> None:
    await storage.save("vanishing.bin", pieces(DATA))
    looked_up = await storage.resolve("vanishing.bin")
    other = make_storage()  # deleted by another path: a migration, another server
    try:
        await other.delete(await other.resolve("vanishing.bin"))
    finally:
        await other.close()
    for start, stop in ((0, None), (1000, 2000), (len(DATA) - 1, None)):
        with pytest.raises(FileNotFound):
            await read_all(storage, looked_up, start, stop)


async def test_deleted_during_a_read_is_not_found_or_complete(
    storage: Storage, make_storage: Callable[[], Storage]
) -> None:
    info = await storage.save("vanishing.bin", pieces(DATA))
    received = bytearray()
    other = make_storage()
    try:
        async with aclosing(storage.read(info)) as chunks:
            async for chunk in chunks:
                if not received:
                    await other.delete(await other.resolve("vanishing.bin"))
                received += chunk
    except FileNotFound:
        assert DATA.startswith(bytes(received))  # aborted cleanly, never a wrong byte
    else:
        assert bytes(received) == DATA  # an open file read to its end: what info describes
    finally:
        await other.close()
