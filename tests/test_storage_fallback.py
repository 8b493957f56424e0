"""FallbackStorage: local disk in front of GridFS (the test database), read through the API and
over HTTP; a fallback that is down is a 503. The contract suite runs on it too
(tests/test_storage_contract.py, backend "fallback")."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from gridserve.storage import FallbackStorage, FileNotFound, StorageUnavailable
from gridserve.storage.base import FileInfo, Storage
from gridserve.storage.gridfs import GridFSStorage
from gridserve.storage.local import LocalStorage
from tests.dbserver import free_port
from tests.livehttp import LiveServer


async def body(data: bytes, size: int = 4000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def read_all(storage: Storage, info: FileInfo, start: int = 0) -> bytes:
    return b"".join([chunk async for chunk in storage.read(info, start)])


@pytest.fixture
def make_pair(mongo_uri: str, db_name: str, tmp_path: Path) -> Callable[[], FallbackStorage]:
    return lambda: FallbackStorage(
        LocalStorage(tmp_path / "primary", block_size=4096),
        GridFSStorage.from_uri(mongo_uri, default_database=db_name),
    )


@pytest.fixture
async def pair(make_pair: Callable[[], FallbackStorage]) -> AsyncIterator[FallbackStorage]:
    storage = make_pair()
    yield storage
    await storage.close()


async def test_a_miss_in_the_primary_is_read_from_the_fallback(pair: FallbackStorage) -> None:
    old = await pair.fallbacks[0].save("old.bin", body(b"from gridfs" * 1000))
    info = await pair.resolve("old.bin")
    assert (info.id, info.etag) == (old.id, old.etag)
    assert await read_all(pair, info) == b"from gridfs" * 1000
    assert await read_all(pair, info, 5000) == (b"from gridfs" * 1000)[5000:]
    by_id = await pair.resolve(str(old.id))  # id URLs keep working through the fallback
    assert by_id.id == old.id
    with pytest.raises(FileNotFound):
        await pair.resolve("nowhere.bin")


async def test_the_primary_wins_and_writes_go_to_it(pair: FallbackStorage) -> None:
    await pair.fallbacks[0].save("both.txt", body(b"old"))
    saved = await pair.save("both.txt", body(b"new"))
    assert await read_all(pair, await pair.resolve("both.txt")) == b"new"
    assert await read_all(pair.primary, await pair.primary.resolve("both.txt")) == b"new"
    await pair.delete(saved)  # the primary's copy goes; the fallback's shows again
    assert await read_all(pair, await pair.resolve("both.txt")) == b"old"


async def test_fallbacks_are_read_only(pair: FallbackStorage) -> None:
    await pair.fallbacks[0].save("keep.txt", body(b"kept"))
    with pytest.raises(FileNotFound):
        await pair.delete(await pair.resolve("keep.txt"))
    fallback = pair.fallbacks[0]
    assert await read_all(fallback, await fallback.resolve("keep.txt")) == b"kept"


async def test_listings_merge_by_name_primary_first(pair: FallbackStorage) -> None:
    for name in ("a/1", "a/3", "b/1", "shared"):
        await pair.fallbacks[0].save(name, body(b"fallback"))
    for name in ("a/2", "a/4", "shared"):
        await pair.save(name, body(b"primary!"))
    listed = [info async for info in pair.list()]
    assert [i.filename for i in listed] == ["a/1", "a/2", "a/3", "a/4", "b/1", "shared"]
    assert listed[-1].length == len(b"primary!")
    assert await read_all(pair, listed[0]) == b"fallback"  # a listed file reads from its owner
    assert [i.filename async for i in pair.list("a/", limit=3)] == ["a/1", "a/2", "a/3"]
    assert [i.filename async for i in pair.list("a/", limit=2, after="a/2")] == ["a/3", "a/4"]
    assert [i.filename async for i in pair.list(limit=0)] == []


async def test_a_read_goes_on_from_the_primary_when_the_fallback_copy_moves(
    pair: FallbackStorage,
) -> None:
    data = bytes(range(256)) * 2000
    old = await pair.fallbacks[0].save("moving.bin", body(data))
    info = await pair.resolve("moving.bin")
    reader = pair.read(info)
    first = await reader.__anext__()
    # A migration copies the file into the primary, then deletes the source mid-read.
    await pair.primary.save("moving.bin", body(data), original=old)
    await pair.fallbacks[0].delete(old)
    rest = b"".join([chunk async for chunk in reader])
    assert first + rest == data
    # Resolved before the delete, read after it: answered from the primary's copy.
    assert await read_all(pair, info) == data


async def test_a_fallback_that_is_down_is_unavailable(tmp_path: Path) -> None:
    dead = f"mongodb://127.0.0.1:{free_port()}/media?serverSelectionTimeoutMS=300"
    storage = FallbackStorage(LocalStorage(tmp_path / "p"), GridFSStorage.from_uri(dead))
    try:
        await storage.save("here.txt", body(b"here"))
        assert await read_all(storage, await storage.resolve("here.txt")) == b"here"
        with pytest.raises(StorageUnavailable):
            await storage.resolve("elsewhere.txt")
        with pytest.raises(StorageUnavailable):
            [info async for info in storage.list()]
        with pytest.raises(StorageUnavailable):
            await storage.ping()
        health = await storage.health()
        assert health[0][1] is None and health[1][1] is not None
    finally:
        await storage.close()


@pytest.fixture
def down_server(tmp_path: Path) -> Iterator[LiveServer]:
    dead = f"mongodb://127.0.0.1:{free_port()}/media?serverSelectionTimeoutMS=300"

    def make() -> Storage:
        primary = LocalStorage(tmp_path / "p")
        (tmp_path / "p" / "here.txt").write_bytes(b"here")
        return FallbackStorage(primary, GridFSStorage.from_uri(dead))

    server = LiveServer(make).start()
    yield server
    server.stop()


def test_over_http_a_fallback_down_is_a_503_never_a_500(down_server: LiveServer) -> None:
    assert requests.get(down_server.url("/fs/here.txt"), timeout=10).content == b"here"
    for path in ("/fs/elsewhere.txt", "/fs/", "/fs/0123456789abcdef01234567"):
        response = requests.get(down_server.url(path), timeout=10)
        assert response.status_code == 503, path
        assert response.headers["Retry-After"].isdigit()
    ready = requests.get(down_server.url("/readyz"), timeout=10)
    assert ready.status_code == 503
    lines = ready.text.splitlines()
    assert lines[0].endswith(": ready") and lines[0].startswith("local directory")
    assert lines[1] == "GridFS media.fs: unavailable"


def test_over_http_the_same_headers_from_either_side(
    make_pair: Callable[[], FallbackStorage], sync_db: Any
) -> None:
    import gridfs

    data = b"x" * 70_000
    gridfs.GridFSBucket(sync_db).upload_from_stream("song.ogg", data, metadata={"a": 1})
    server = LiveServer(make_pair).start()
    try:
        url = server.url("/fs/song.ogg")
        before = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=10)
        assert before.status_code == 206
        info = server.run_coroutine(server.storage.resolve("song.ogg"))
        gone = server.run_coroutine(_copy_then_drop(server.storage, info))
        assert gone
        after = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=10)
        assert after.status_code == 206
        for header in ("ETag", "Last-Modified", "Content-Type", "Content-Disposition"):
            assert after.headers[header] == before.headers[header], header
        full = requests.get(url, headers={"If-Range": before.headers["ETag"]}, timeout=10)
        assert hashlib.md5(full.content).hexdigest() == hashlib.md5(data).hexdigest()
    finally:
        server.stop()


async def _copy_then_drop(storage: Storage, info: FileInfo) -> bool:
    assert isinstance(storage, FallbackStorage)
    source = storage.fallbacks[0]
    await storage.primary.save(
        info.filename,
        source.read(info),
        content_type=info.content_type,
        metadata=info.metadata,
        original=info,
    )
    await source.delete(info)
    with pytest.raises(FileNotFound):
        await source.resolve("song.ogg")
    return True


class _MovedWhileAsked(GridFSStorage):
    """A real GridFS fallback whose file finishes moving into ``primary`` (copied, then
    deleted here) just as it is asked for it: the race of a lookup with a migration."""

    primary: Storage

    async def resolve(self, key: str, revision: int | None = None) -> FileInfo:
        info = await super().resolve(key, revision)
        await self.primary.save(key, self.read(info), original=info)
        await self.delete(info)
        return await super().resolve(key, revision)


async def test_a_file_moved_between_the_lookups_is_found(
    mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    fallback = _MovedWhileAsked.from_uri(mongo_uri, default_database=db_name)
    assert isinstance(fallback, _MovedWhileAsked)
    fallback.primary = LocalStorage(tmp_path / "primary")
    storage = FallbackStorage(fallback.primary, fallback)
    try:
        old = await GridFSStorage.save(fallback, "racing.txt", body(b"moving"))
        info = await storage.resolve("racing.txt")  # missed by both, then in the primary
        assert info.etag == old.etag
        assert await read_all(storage, info) == b"moving"
    finally:
        await storage.close()


class _CountingLocal(LocalStorage):
    """A real local storage that counts the listing entries taken from it."""

    taken = 0

    async def list(
        self, prefix: str = "", limit: int = 100, after: str = ""
    ) -> AsyncIterator[FileInfo]:
        async for info in super().list(prefix, limit, after):
            self.taken += 1
            yield info


async def test_a_merged_page_takes_at_most_limit_names_from_each_storage(tmp_path: Path) -> None:
    primary, fallback = _CountingLocal(tmp_path / "p"), _CountingLocal(tmp_path / "f")
    for i in range(40):
        await (primary if i % 2 else fallback).save(f"f{i:02}", body(b"x"))
    storage = FallbackStorage(primary, fallback)
    page = [info.filename async for info in storage.list(limit=5, after="f09")]
    assert page == ["f10", "f11", "f12", "f13", "f14"]
    assert primary.taken <= 5 and fallback.taken <= 5


async def test_revisions_come_from_the_first_storage_holding_the_name(
    pair: FallbackStorage,
) -> None:
    for version in (b"one", b"two"):
        await pair.fallbacks[0].save("r.txt", body(version))
    old = await pair.revisions("r.txt")
    assert [await read_all(pair, info) for info in old] == [b"one", b"two"]
    await pair.save("r.txt", body(b"new"))
    assert [await read_all(pair, info) for info in await pair.revisions("r.txt")] == [b"new"]
    assert await pair.revisions("none.txt") == []
