"""The chunk cache (gridserve/storage/cache.py) on the real test database: single flight, the
size bound, failures, deletes and replacements, and the path with the cache off.

What the database returns is counted with PyMongo's command monitoring: every chunk document
in a reply to a find or getMore on ``fs.chunks``.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import threading
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any

import gridfs
import pymongo
import pytest
import requests
from pymongo import AsyncMongoClient, monitoring

from gridserve.acl import default_acl
from gridserve.app import make_app
from gridserve.storage.base import FileInfo, Storage, StorageUnavailable
from gridserve.storage.cache import CachedStorage
from gridserve.storage.gridfs import GridFSStorage
from gridserve.storage.s3 import S3Storage
from gridserve.storage.wrapper import StorageWrapper
from tests.conftest import SyncDB
from tests.dbserver import FerretDB
from tests.livehttp import LiveServer
from tests.s3server import S3Proxy
from tests.test_cli import gridserve
from tests.test_daemon import Daemon

KIB = 1024
HANG = 60  # seconds: a deadline that only a hang reaches


class ChunkReplies(monitoring.CommandListener):
    """How many times the database returned each chunk ``n`` (of any file)."""

    def __init__(self) -> None:
        self.returned: Counter[int] = Counter()
        self._lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        cursor = event.reply.get("cursor")
        if not isinstance(cursor, dict) or not str(cursor.get("ns", "")).endswith(".fs.chunks"):
            return
        with self._lock:
            for doc in cursor.get("firstBatch") or cursor.get("nextBatch") or []:
                self.returned[doc["n"]] += 1

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def total(self) -> int:
        with self._lock:
            return sum(self.returned.values())


def gridfs_factory(
    uri: str, db_name: str, listener: ChunkReplies, **options: Any
) -> Callable[[], GridFSStorage]:
    def make() -> GridFSStorage:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            uri, event_listeners=[listener], serverSelectionTimeoutMS=2000
        )
        return GridFSStorage(client[db_name], owns_client=True, **options)

    return make


def put(sync_db: SyncDB, name: str, data: bytes, chunk_size: int) -> Any:
    return gridfs.GridFSBucket(sync_db, chunk_size_bytes=chunk_size).upload_from_stream(name, data)


async def read_all(
    storage: Storage, info: FileInfo, start: int = 0, stop: int | None = None
) -> bytes:
    return b"".join([piece async for piece in storage.read(info, start, stop)])


class GatedStorage(StorageWrapper):
    """A real storage whose reads hand over each piece only once the test allows it (the
    test's way to hold a fetch half-way, not a stand-in: the bytes come from ``inner``, and so
    does the rest, as through any wrapper)."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.permits = asyncio.Semaphore(0)
        self.opened = False
        self.reads = 0
        self.pieces = 0

    def allow(self, pieces: int) -> None:
        for _ in range(pieces):
            self.permits.release()

    def open(self) -> None:
        self.opened = True
        self.permits.release()

    async def read(
        self, info: FileInfo, start: int = 0, stop: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        self.reads += 1
        async for piece in self.inner.read(info, start, stop):
            if not self.opened:
                await self.permits.acquire()
            self.pieces += 1
            yield piece

    def cache_key(self, info: FileInfo) -> Any:
        return self.inner.cache_key(info)


async def wait_until(check: Callable[[], bool]) -> None:
    async def poll() -> None:
        while not check():  # noqa: ASYNC110 - the condition is the cache's own state
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), HANG)


# -- single flight -------------------------------------------------------------------------------


async def test_concurrent_readers_cost_one_read_of_each_chunk(
    mongo_uri: str, db_name: str, sync_db: SyncDB
) -> None:
    data = os.urandom(32 * 32 * KIB)
    put(sync_db, "clip.webm", data, 32 * KIB)
    replies = ChunkReplies()
    cache = CachedStorage(gridfs_factory(mongo_uri, db_name, replies)(), 4 * len(data))
    try:
        info = await cache.resolve("clip.webm")
        bodies = await asyncio.gather(*(read_all(cache, info) for _ in range(8)))
        assert all(body == data for body in bodies)
        assert replies.returned == Counter(range(32))  # each chunk once
        stats = cache.stats()
        assert (stats.misses, stats.hits) == (32, 7 * 32)
        assert stats.storage_read_bytes == len(data)
        # Ranges of every shape later: served from the cache, nothing asked of the database.
        for start, stop in ((0, 1), (5000, 700_000), (len(data) - 10, len(data))):
            assert await read_all(cache, info, start, stop) == data[start:stop]
        assert replies.total() == 32
    finally:
        await cache.close()


def test_concurrent_http_downloads_read_each_chunk_once(
    mongo_uri: str, db_name: str, sync_db: SyncDB
) -> None:
    data = os.urandom(24 * 32 * KIB + 1234)
    put(sync_db, "clip.webm", data, 32 * KIB)
    replies = ChunkReplies()
    make = gridfs_factory(mongo_uri, db_name, replies)
    server = LiveServer(lambda: CachedStorage(make(), 8 * 1024 * KIB)).start()
    try:
        barrier = threading.Barrier(8)
        bodies: list[bytes] = []

        def download() -> None:
            barrier.wait(HANG)
            bodies.append(requests.get(server.url("/fs/clip.webm"), timeout=HANG).content)

        threads = [threading.Thread(target=download) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(HANG)
        assert len(bodies) == 8 and all(body == data for body in bodies)
        assert replies.returned == Counter(range(25))
        ranged = requests.get(
            server.url("/fs/clip.webm"), headers={"Range": "bytes=100000-300000"}, timeout=HANG
        )
        assert ranged.status_code == 206 and ranged.content == data[100000:300001]
        assert replies.total() == 25
        metrics = requests.get(server.url("/metrics"), timeout=HANG).text
        read = f'gridserve_storage_read_bytes_total{{storage="gridfs"}} {float(len(data))}'
        assert read in metrics  # what the cache read from GridFS, not what it served
        assert 'storage="other"' not in metrics
        assert "gridserve_cache_misses_total 25.0" in metrics
        hits = re.search(r"^gridserve_cache_hits_total (\S+)$", metrics, re.MULTILINE)
        assert hits is not None and float(hits.group(1)) == 7 * 25 + 7
        assert f"gridserve_cache_bytes {float(len(data))}" in metrics
    finally:
        server.stop()


async def test_a_reader_streams_what_arrived_and_leaving_cancels_nothing(
    mongo_uri: str, db_name: str, sync_db: SyncDB
) -> None:
    data = os.urandom(8 * 16 * KIB)
    put(sync_db, "clip.webm", data, 16 * KIB)
    gated = GatedStorage(gridfs_factory(mongo_uri, db_name, ChunkReplies())())
    cache = CachedStorage(gated, 1024 * KIB, fetch_window=len(data))
    try:
        info = await cache.resolve("clip.webm")
        first_reader = cache.read(info)
        gated.allow(1)
        assert await asyncio.wait_for(anext(first_reader), HANG) == data[: 16 * KIB]
        assert gated.pieces == 1  # the first chunk reached the client; the rest is not here yet

        second = asyncio.ensure_future(read_all(cache, info))
        waiting = asyncio.ensure_future(read_all(cache, info))
        await wait_until(lambda: cache.stats().hits == 2)  # both served chunk 0, wait for 1
        await first_reader.aclose()  # the reader that started the fetch leaves
        waiting.cancel()  # and one waiting on it is cancelled
        gated.open()
        assert await asyncio.wait_for(second, HANG) == data
        assert waiting.cancelled()
        assert gated.pieces == 8  # each chunk read once: no fetch was cancelled and redone
        assert cache.stats().bytes == len(data)
    finally:
        await cache.close()


async def test_a_scan_through_the_cache_leaves_the_hot_file_cached(
    mongo_uri: str, db_name: str, sync_db: SyncDB
) -> None:
    hot, scan = os.urandom(8 * 16 * KIB), os.urandom(64 * 16 * KIB)
    put(sync_db, "hot.webm", hot, 16 * KIB)
    put(sync_db, "scan.webm", scan, 16 * KIB)
    replies = ChunkReplies()
    cache = CachedStorage(
        gridfs_factory(mongo_uri, db_name, replies)(), 32 * 16 * KIB, fetch_window=64 * KIB
    )
    try:
        hot_info, scan_info = await cache.resolve("hot.webm"), await cache.resolve("scan.webm")
        for _ in range(2):
            assert await read_all(cache, hot_info) == hot
        for _ in range(2):  # read twice, each chunk once per pass: a download, not popularity
            assert await read_all(cache, scan_info) == scan
        assert cache.stats().evictions > 0
        before = replies.total()
        assert await read_all(cache, hot_info) == hot
        assert replies.total() == before  # the hot file is still all in the cache
    finally:
        await cache.close()


async def test_a_stalled_reader_fetches_no_further_than_its_window(
    mongo_uri: str, db_name: str, sync_db: SyncDB
) -> None:
    data = os.urandom(64 * 16 * KIB)
    put(sync_db, "clip.webm", data, 16 * KIB)
    cache = CachedStorage(
        gridfs_factory(mongo_uri, db_name, ChunkReplies())(), 4096 * KIB, fetch_window=64 * KIB
    )
    try:
        info = await cache.resolve("clip.webm")
        reader = cache.read(info)  # a player that takes the first chunk, then stops reading
        assert await asyncio.wait_for(anext(reader), HANG) == data[: 16 * KIB]
        await asyncio.wait_for(asyncio.gather(*cache._tasks), HANG)  # its fetches are done
        assert cache.stats().storage_read_bytes <= 4 * 16 * KIB  # the window, not the file
        await reader.aclose()
    finally:
        await cache.close()


# -- bounds, failures, deletes --------------------------------------------------------------------


def test_eviction_keeps_the_size_bound(mongo_uri: str, db_name: str, sync_db: SyncDB) -> None:
    data = os.urandom(64 * 16 * KIB)
    put(sync_db, "big.webm", data, 16 * KIB)
    make = gridfs_factory(mongo_uri, db_name, ChunkReplies())
    server = LiveServer(lambda: CachedStorage(make(), 128 * KIB)).start()
    try:
        for _ in range(2):
            assert requests.get(server.url("/fs/big.webm"), timeout=HANG).content == data
            ranged = requests.get(
                server.url("/fs/big.webm"), headers={"Range": "bytes=500000-"}, timeout=HANG
            )
            assert ranged.content == data[500000:]
        cache = server.storage
        assert isinstance(cache, CachedStorage)
        stats = server.run_coroutine(_stats(cache))
        assert 0 < stats.bytes <= 128 * KIB
        assert stats.evictions >= (3 * len(data) - 128 * KIB) // (16 * KIB) - 8
        metrics = requests.get(server.url("/metrics"), timeout=HANG).text
        assert f"gridserve_cache_evictions_total {float(stats.evictions)}" in metrics
    finally:
        server.stop()


async def _stats(cache: CachedStorage) -> Any:
    return cache.stats()


async def test_a_failed_fetch_fails_its_waiters_and_is_not_cached(own_database: FerretDB) -> None:
    data = os.urandom(8 * 16 * KIB)
    sync: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        own_database.uri, serverSelectionTimeoutMS=5000
    )
    put(sync["media"], "clip.webm", data, 16 * KIB)
    sync.close()
    replies = ChunkReplies()
    inner = gridfs_factory(own_database.uri, "media", replies, read_ahead=16 * KIB)()
    gated = GatedStorage(inner)
    cache = CachedStorage(gated, 1024 * KIB, fetch_window=len(data))
    try:
        info = await cache.resolve("clip.webm")
        readers = [asyncio.ensure_future(read_all(cache, info)) for _ in range(2)]
        gated.allow(2)
        await wait_until(lambda: cache.stats().bytes == 2 * 16 * KIB)
        own_database.stop()
        gated.open()
        for reader in readers:
            with pytest.raises(StorageUnavailable):
                await asyncio.wait_for(reader, HANG)
        delivered = cache.stats().bytes
        assert 2 * 16 * KIB <= delivered < len(data)  # what arrived before the fault, no more
        own_database.start()
        before = replies.total()
        # The failure was not remembered: the next reader fetches what was missing.
        assert await asyncio.wait_for(read_all(cache, info), HANG) == data
        assert replies.total() - before == (len(data) - delivered) // (16 * KIB)
        assert cache.stats().bytes == len(data)
    finally:
        await cache.close()


def test_deleted_and_replaced_files_never_serve_stale_bytes(
    mongo_uri: str, db_name: str, sync_db: SyncDB
) -> None:
    old, new = os.urandom(100 * KIB), os.urandom(100 * KIB)
    old_id = put(sync_db, "clip.webm", old, 16 * KIB)
    make = gridfs_factory(mongo_uri, db_name, ChunkReplies(), file_cache_seconds=0)
    server = LiveServer(
        lambda: CachedStorage(make(), 1024 * KIB), acl=default_acl(upload_token="t")
    ).start()
    cache = server.storage
    assert isinstance(cache, CachedStorage)
    try:
        assert requests.get(server.url("/fs/clip.webm"), timeout=HANG).content == old
        assert requests.get(server.url(f"/fs/{old_id}"), timeout=HANG).content == old
        # Another tool deletes it and uploads a new revision of the same name and size.
        gridfs.GridFSBucket(sync_db).delete(old_id)
        new_id = put(sync_db, "clip.webm", new, 16 * KIB)
        assert requests.get(server.url("/fs/clip.webm"), timeout=HANG).content == new
        assert requests.get(server.url(f"/fs/{old_id}"), timeout=HANG).status_code == 404
        ranged = requests.get(
            server.url("/fs/clip.webm"), headers={"Range": "bytes=1000-2000"}, timeout=HANG
        )
        assert ranged.content == new[1000:2001]
        # A delete through gridserve evicts what it cached of the file.
        assert server.run_coroutine(_stats(cache)).bytes == len(old) + len(new)
        deleted = requests.delete(
            server.url(f"/fs/{new_id}"), headers={"Authorization": "Bearer t"}, timeout=HANG
        )
        assert deleted.status_code in (200, 204)
        assert server.run_coroutine(_stats(cache)).bytes == len(old)
        assert requests.get(server.url("/fs/clip.webm"), timeout=HANG).status_code == 404
    finally:
        server.stop()


async def test_a_replaced_s3_object_is_read_anew(s3_server: S3Proxy, s3_bucket: str) -> None:
    cache = CachedStorage(
        S3Storage(s3_bucket, "media", **s3_server.client_options()), 4 * 1024 * KIB
    )
    old, new = os.urandom(600 * KIB), os.urandom(600 * KIB)

    async def body(data: bytes) -> AsyncIterator[bytes]:
        yield data

    try:
        first = await cache.save("a.webm", body(old))
        assert await read_all(cache, await cache.resolve("a.webm")) == old
        await cache.inner.save("a.webm", body(new))  # replaced behind the cache's back
        second = await cache.resolve("a.webm")
        assert second.etag != first.etag
        assert await read_all(cache, second, 1000) == new[1000:]
        assert await read_all(cache, second) == new
    finally:
        await cache.close()


# -- cache off ------------------------------------------------------------------------------------


async def test_cache_off_reads_as_the_storage_does(
    mongo_uri: str, db_name: str, sync_db: SyncDB
) -> None:
    data = os.urandom(10 * 16 * KIB)
    put(sync_db, "clip.webm", data, 16 * KIB)
    plain_replies, off_replies = ChunkReplies(), ChunkReplies()
    plain = gridfs_factory(mongo_uri, db_name, plain_replies)()
    off = CachedStorage(gridfs_factory(mongo_uri, db_name, off_replies)(), 0)
    try:
        for storage in (plain, off):
            info = await storage.resolve("clip.webm")
            for start, stop in ((0, None), (20000, 90000), (0, None)):
                assert await read_all(storage, info, start, stop) == data[start:stop]
        assert off_replies.returned == plain_replies.returned
        assert off.stats().hits == off.stats().misses == 0
    finally:
        await plain.close()
        await off.close()
    app = make_app(plain)
    assert not any(
        "gridserve_cache" in metric.name
        for metric in app.settings["gridserve_metrics"].registry.collect()
    )


# -- the daemon ------------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", ["1M", "0"])
def test_the_daemon_caches_unless_told_not_to(
    setting: str, mongo_uri: str, db_name: str, sync_db: SyncDB
) -> None:
    data = os.urandom(5 * 16 * KIB)
    put(sync_db, "clip.webm", data, 16 * KIB)
    daemon = Daemon("--storage", mongo_uri + db_name, env={"GRIDSERVE_CHUNK_CACHE": setting})
    try:
        for _ in range(3):
            assert requests.get(daemon.url("/fs/clip.webm"), timeout=HANG).content == data
        metrics = requests.get(daemon.url("/metrics"), timeout=HANG).text
        read = 'gridserve_storage_read_bytes_total{storage="gridfs"}'
        if setting == "0":
            assert "gridserve_cache" not in metrics
            assert f"{read} {float(3 * len(data))}" in metrics  # each download read it all
        else:
            assert "gridserve_cache_misses_total 5.0" in metrics
            assert "gridserve_cache_hits_total 10.0" in metrics
            assert f"{read} {float(len(data))}" in metrics  # once
    finally:
        code, stderr = daemon.stop()
    assert code == 0, stderr
    assert ("with a 1 MiB chunk cache" in stderr) == (setting == "1M")


def test_print_config_shows_the_chunk_cache(tmp_path: Path) -> None:
    config = tmp_path / "gridserve.toml"
    config.write_text('[gridserve]\nchunk_cache = "64M"\n')
    shown = subprocess.run(
        gridserve("serve", "--config", str(config), "--print-config"),
        capture_output=True,
        text=True,
        timeout=HANG,
        check=True,
    ).stdout
    assert f"chunk_cache = {64 * 1024 * 1024}" in shown
    shown = subprocess.run(
        gridserve("serve", "--chunk-cache", "0", "--print-config"),
        capture_output=True,
        text=True,
        timeout=HANG,
        check=True,
    ).stdout
    assert "chunk_cache = 0" in shown
