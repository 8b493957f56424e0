"""Fixtures: the test database (FerretDB, or MONGODB_URI), a fresh database per test, GridFS
seeding through the synchronous driver, and live gridserve servers on loopback sockets."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import gridfs
import pymongo
import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient

from gridserve.storage.gridfs import GridFSStorage
from tests.dbserver import FerretDB, TestDatabaseError, ferretdb_binary
from tests.livehttp import LiveServer

SyncDB = pymongo.database.Database[dict[str, Any]]

_FIGURES: list[str] = []


def report_figure(line: str) -> None:
    """Records a measured figure; all of them are printed at the end of the run."""
    _FIGURES.append(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _FIGURES:
        terminalreporter.section("measured figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def test_database() -> Iterator[FerretDB | None]:
    """The FerretDB process of this session (None when MONGODB_URI names a server)."""
    if os.environ.get("MONGODB_URI"):
        yield None
        return
    try:
        server = FerretDB(ferretdb_binary())
        server.start()
    except TestDatabaseError as exc:
        pytest.fail(f"cannot start the test database: {exc}", pytrace=False)
    yield server
    server.cleanup()


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


PutFile = Callable[..., ObjectId]


@pytest.fixture
def put_file(sync_db: SyncDB) -> PutFile:
    """Stores a file with the synchronous GridFS API: put_file(name, data, chunk_size=...,
    content_type=..., metadata=..., md5=...) -> ObjectId."""

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
def serve(mongo_uri: str, db_name: str) -> Iterator[Callable[..., LiveServer]]:
    """serve(**make_app_options) -> a LiveServer on this test's database (GridFS bucket fs)."""
    servers: list[LiveServer] = []

    def start(**options: Any) -> LiveServer:
        def make_storage() -> GridFSStorage:
            return GridFSStorage.from_uri(mongo_uri, default_database=db_name)

        server = LiveServer(make_storage, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(serve: Callable[..., LiveServer]) -> LiveServer:
    return serve()
