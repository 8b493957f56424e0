"""Fixtures: the test database (FerretDB, or MONGODB_URI), a fresh database per test, GridFS
seeding through the synchronous driver, and live gridserve servers on loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import gridfs
import pymongo
import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient

from gridserve.storage.base import Storage
from gridserve.storage.cache import CachedStorage
from gridserve.storage.fallback import FallbackStorage
from gridserve.storage.gridfs import GridFSStorage
from gridserve.storage.local import LocalStorage
from gridserve.storage.s3 import S3Storage
from tests.dbserver import FerretDB, TestDatabaseError, ferretdb_binary
from tests.livehttp import LiveServer
from tests.s3server import S3Proxy, s3proxy_jar

SyncDB = pymongo.database.Database[dict[str, Any]]

_FIGURES: list[str] = []

UPLOAD_HEAD = random.Random(0).randbytes(64 * 1024)
"""The first bytes of :func:`upload_data`: seeded, so what an upload's type check sniffs in
them is the same on every run (``application/octet-stream``, pinned by test_uploads_policy)."""


def upload_data(size: int) -> bytes:
    """``size`` incompressible bytes to upload over HTTP: random after :data:`UPLOAD_HEAD`.
    ``os.urandom`` alone sniffs as ``application/x-dosexec`` (a DOS .COM heuristic on the
    first bytes) about once in a hundred, which the default upload policy refuses with 415."""
    return UPLOAD_HEAD[:size] + os.urandom(max(0, size - len(UPLOAD_HEAD)))


def report_figure(line: str) -> None:
    """Records a measured figure; all of them are printed at the end of the run."""
    _FIGURES.append(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _FIGURES:
        terminalreporter.section("measured figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)


Server = TypeVar("Server", FerretDB, S3Proxy)


@contextlib.contextmanager
def running(make: Callable[[], Server], what: str) -> Iterator[Server]:
    """``make()`` started, and cleaned up on exit; if it cannot start (TestDatabaseError), the
    test fails saying so about ``what``, without a traceback."""
    try:
        server = make()
        server.start()
    except TestDatabaseError as exc:
        pytest.fail(f"cannot start {what}: {exc}", pytrace=False)
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def test_database() -> Iterator[FerretDB | None]:
    """The FerretDB process of this session (None when MONGODB_URI names a server)."""
    if os.environ.get("MONGODB_URI"):
        yield None
        return
    with running(lambda: FerretDB(ferretdb_binary()), "the test database") as server:
        yield server


@pytest.fixture(scope="session")
def mongo_uri(test_database: FerretDB | None) -> str:
    return os.environ.get("MONGODB_URI") or (test_database.uri if test_database else "")


@pytest.fixture(scope="session")
def sync_client(mongo_uri: str) -> Iterator[pymongo.MongoClient[dict[str, Any]]]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        mongo_uri, serverSelectionTimeoutMS=10000
    )
    yield client
    client.close()


@pytest.fixture
def db_name(sync_client: pymongo.MongoClient[dict[str, Any]]) -> Iterator[str]:
    """A database of this test's own, dropped afterwards."""
    name = f"gs_{uuid.uuid4().hex[:12]}"
    yield name
    sync_client.drop_database(name)


@pytest.fixture
def sync_db(sync_client: pymongo.MongoClient[dict[str, Any]], db_name: str) -> SyncDB:
    return sync_client[db_name]


BACKENDS = ["gridfs", "local", "s3"]
# The same backends behind a small chunk cache (the contract suite runs on them too).
CACHED_BACKENDS = ["cached-gridfs", "cached-s3"]
CACHE_FOR_TESTS = 600 * 1024  # a few chunks: tests evict
PutFile = Callable[..., Any]


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend under test: "gridfs" unless parametrized (indirect=True)."""
    return str(getattr(request, "param", "gridfs"))


@pytest.fixture
def own_database() -> Iterator[FerretDB]:
    """A FerretDB process of this test's own, for a test that stops and restarts it."""
    with running(lambda: FerretDB(ferretdb_binary()), "a test database") as server:
        yield server


@pytest.fixture
def local_root(tmp_path: Path) -> Path:
    return tmp_path / "local-storage"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Proxy]:
    """The s3proxy process of this session."""
    with running(lambda: S3Proxy(s3proxy_jar()), "the S3 test server") as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Proxy) -> str:
    """A fresh bucket of this test's own."""
    from aiobotocore.session import get_session

    name = f"gs-{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        async with get_session().create_client("s3", **s3_server.client_options()) as s3:
            await s3.create_bucket(Bucket=name)

    asyncio.run(create())
    return name


def s3_storage(request: pytest.FixtureRequest) -> Callable[[], Storage]:
    server: S3Proxy = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    return lambda: S3Storage(bucket, "media", **server.client_options())


@pytest.fixture
def make_storage(
    backend: str, request: pytest.FixtureRequest, local_root: Path
) -> Callable[[], Storage]:
    """A factory of the backend's storage (call it on the loop that will use it)."""
    if backend.startswith("cached-"):
        inner = make_storage_of(backend.removeprefix("cached-"), request, local_root)
        return lambda: CachedStorage(inner(), CACHE_FOR_TESTS, fetch_window=64 * 1024)
    return make_storage_of(backend, request, local_root)


def make_storage_of(
    backend: str, request: pytest.FixtureRequest, local_root: Path
) -> Callable[[], Storage]:
    if backend == "gridfs":
        mongo_uri: str = request.getfixturevalue("mongo_uri")
        db_name: str = request.getfixturevalue("db_name")
        return lambda: GridFSStorage.from_uri(mongo_uri, default_database=db_name)
    if backend == "s3":
        return s3_storage(request)
    if backend == "local":
        # A small read block, so that tests cross block boundaries as they do GridFS chunks.
        return lambda: LocalStorage(local_root, block_size=4096)
    if backend == "fallback":
        # Local disk in front of GridFS: what serves files while they move.
        mongo_uri = request.getfixturevalue("mongo_uri")
        db_name = request.getfixturevalue("db_name")
        return lambda: FallbackStorage(
            LocalStorage(local_root, block_size=4096),
            GridFSStorage.from_uri(mongo_uri, default_database=db_name),
        )
    raise AssertionError(f"unknown backend {backend}")


@pytest.fixture
def put_file(
    backend: str, request: pytest.FixtureRequest, make_storage: Callable[[], Storage]
) -> PutFile:
    """Stores a file in the backend: put_file(name, data, chunk_size=..., content_type=...,
    metadata=..., md5=...) -> its id. GridFS goes through the synchronous GridFS API (md5, when
    given, is set on the file document); the other backends through their own save()."""
    if backend != "gridfs":

        def put_other(
            name: str,
            data: bytes,
            *,
            chunk_size: int = 0,
            content_type: str | None = None,
            metadata: dict[str, Any] | None = None,
        ) -> Any:
            async def body() -> AsyncIterator[bytes]:
                yield data

            async def save() -> Any:
                storage = make_storage()
                try:
                    saved = await storage.save(
                        name, body(), content_type=content_type, metadata=metadata
                    )
                finally:
                    await storage.close()
                return saved.id

            return asyncio.run(save())

        return put_other

    sync_db: SyncDB = request.getfixturevalue("sync_db")

    def put(
        name: str,
        data: bytes,
        *,
        chunk_size: int = 16 * 1024,
        content_type: str | None = None,
        metadata: dict[str, Any] | None = None,
        md5: str | None = None,
    ) -> ObjectId:
        bucket = gridfs.GridFSBucket(sync_db, chunk_size_bytes=chunk_size)
        file_id = bucket.upload_from_stream(name, data, metadata=metadata)
        extra: dict[str, Any] = {}
        if content_type is not None:
            extra["contentType"] = content_type
        if md5 is not None:
            extra["md5"] = md5
        if extra:
            sync_db["fs.files"].update_one({"_id": file_id}, {"$set": extra})
        return file_id

    return put


@pytest.fixture
async def async_db(mongo_uri: str, db_name: str) -> Any:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    yield client[db_name]
    await client.close()


@pytest.fixture
def serve(make_storage: Callable[[], Storage]) -> Iterator[Callable[..., LiveServer]]:
    """serve(**make_app_options) -> a LiveServer on this test's backend."""
    servers: list[LiveServer] = []

    def start(**options: Any) -> LiveServer:
        server = LiveServer(make_storage, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(serve: Callable[..., LiveServer]) -> LiveServer:
    return serve()


@pytest.fixture
def nothing_left(
    backend: str, request: pytest.FixtureRequest, local_root: Path
) -> Callable[[], None]:
    """Asserts the backend holds no file, no orphan chunk, no temporary or pending upload."""

    def check() -> None:
        if backend == "gridfs":
            db = request.getfixturevalue("sync_db")
            assert db["fs.files"].count_documents({}) == 0
            assert db["fs.chunks"].count_documents({}) == 0
        elif backend == "local":
            visible = [p for p in local_root.rglob("*") if ".gridserve" not in p.parts]
            assert [p for p in visible if p.is_file()] == []
            tmp = local_root / ".gridserve" / "tmp"  # made by the first write only
            assert not tmp.exists() or list(tmp.iterdir()) == []
        else:
            from tests.test_storage_s3 import leftovers

            server = request.getfixturevalue("s3_server")
            bucket = request.getfixturevalue("s3_bucket")
            assert asyncio.run(leftovers(server, bucket)) == ([], [])

    return check
