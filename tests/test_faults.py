"""Faults: the database going away under a running server, mid-download and mid-upload.

Each test runs its own FerretDB, stops it at the worst moment and starts it again on the same
port and data directory.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator

import gridfs
import pymongo
import pytest
import requests

from gridserve.acl import default_acl
from gridserve.storage.gridfs import GridFSStorage
from tests.conftest import upload_data
from tests.dbserver import FerretDB
from tests.livehttp import LiveServer

MIB = 1024 * 1024


@pytest.fixture
def served(own_database: FerretDB) -> Iterator[LiveServer]:
    def make_storage() -> GridFSStorage:
        return GridFSStorage.from_uri(
            own_database.uri + "media", serverSelectionTimeoutMS=1500, connectTimeoutMS=1000
        )

    server = LiveServer(make_storage, acl=default_acl(upload_token="t")).start()
    yield server
    server.stop()


def sync_db(database: FerretDB) -> pymongo.database.Database[dict[str, object]]:
    return pymongo.MongoClient(database.uri, serverSelectionTimeoutMS=5000)["media"]


def wait_for(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.2)


def test_database_stopped_mid_download(own_database: FerretDB, served: LiveServer) -> None:
    data = os.urandom(8 * MIB)
    gridfs.GridFSBucket(sync_db(own_database), chunk_size_bytes=255 * 1024).upload_from_stream(
        "movie.webm", data
    )
    response = requests.get(served.url("/fs/movie.webm"), stream=True, timeout=30)
    received = 0
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for block in response.iter_content(64 * 1024):
            received += len(block)
            if received >= MIB and own_database.process is not None:
                own_database.stop()
            time.sleep(0.005)
    assert received < len(data)  # cut, not completed with wrong bytes

    down = requests.get(served.url("/fs/movie.webm"), timeout=30)
    assert down.status_code == 503
    assert down.headers["Retry-After"].isdigit()

    own_database.start()

    def serves_again() -> bool:
        return requests.get(served.url("/fs/movie.webm"), timeout=30).status_code == 200

    wait_for(serves_again)
    assert requests.get(served.url("/fs/movie.webm"), timeout=30).content == data


def test_database_lost_mid_upload_leaves_no_orphans(
    own_database: FerretDB, served: LiveServer
) -> None:
    stop_now = threading.Event()

    def body() -> Iterator[bytes]:
        block = upload_data(256 * 1024)
        for i in range(40):
            if i == 12:
                stop_now.set()
                time.sleep(1.0)  # the database goes away while the body still flows
            yield block

    def stopper() -> None:
        stop_now.wait(30)
        own_database.stop()

    thread = threading.Thread(target=stopper)
    thread.start()
    try:
        response = requests.put(
            served.url("/fs/upload.webm"),
            data=body(),
            headers={"Authorization": "Bearer t"},
            timeout=60,
        )
        assert response.status_code == 503
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
        pass  # the server may close while the client is still sending
    thread.join()

    own_database.start()
    db = sync_db(own_database)

    def clean() -> bool:
        return db["fs.chunks"].count_documents({}) == 0

    wait_for(clean, timeout=60)  # the background cleanup finds the database again
    assert db["fs.files"].count_documents({}) == 0
    assert requests.get(served.url("/fs/upload.webm"), timeout=30).status_code == 404
