"""The streaming handler on GridFS specifics: stored MD5, revisions, chunk-level reads,
damaged files, a Motor database, an unreachable database."""

from __future__ import annotations

import hashlib
import logging
from datetime import timezone
from typing import Any

import gridfs
import pytest
import requests
from bson import ObjectId

from gridserve.storage.gridfs import GridFSStorage
from tests.conftest import PutFile, SyncDB
from tests.livehttp import LiveServer
from tests.test_stream_http import DATA, HTTP_DATE, get


@pytest.fixture
def video(put_file: PutFile) -> ObjectId:
    file_id: ObjectId = put_file("show/ep1/clip.webm", DATA)
    return file_id


def test_revisions(server: LiveServer, put_file: PutFile) -> None:
    for version in range(3):
        put_file("song.ogg", f"v{version}".encode())
    assert get(server, "/fs/song.ogg").content == b"v2"
    assert get(server, "/fs/song.ogg?rev=-1").content == b"v2"
    assert get(server, "/fs/song.ogg?rev=-2").content == b"v1"
    assert get(server, "/fs/song.ogg?rev=0").content == b"v0"
    assert get(server, "/fs/song.ogg?rev=2").content == b"v2"
    assert get(server, "/fs/song.ogg?rev=3").status_code == 404
    assert get(server, "/fs/song.ogg?rev=-4").status_code == 404
    for bad in ("x", "1.5", "", "--1", "99999999999999999999"):
        assert get(server, f"/fs/song.ogg?rev={bad}").status_code == 400, bad


def test_head_has_get_headers_and_reads_no_chunk(
    server: LiveServer, video: ObjectId, sync_db: SyncDB
) -> None:
    full = get(server, f"/fs/{video}")
    sync_db["fs.chunks"].delete_many({"files_id": video})  # a HEAD that read would now fail
    head = requests.head(server.url(f"/fs/{video}"), timeout=10)
    assert head.status_code == 200
    assert head.content == b""
    for name in ("Content-Length", "Content-Type", "ETag", "Last-Modified", "Accept-Ranges"):
        assert head.headers[name] == full.headers[name]
    ranged = requests.head(server.url(f"/fs/{video}"), headers={"Range": "bytes=0-9"}, timeout=10)
    assert ranged.status_code == 206
    assert ranged.headers["Content-Range"] == f"bytes 0-9/{len(DATA)}"


def test_etag_from_stored_md5_and_last_modified(
    server: LiveServer, put_file: PutFile, sync_db: SyncDB
) -> None:
    digest = hashlib.md5(b"hello", usedforsecurity=False).hexdigest()
    file_id = put_file("hello.txt", b"hello", md5=digest)
    response = get(server, f"/fs/{file_id}")
    assert response.headers["ETag"] == f'"{digest}"'
    uploaded = sync_db["fs.files"].find_one({"_id": file_id})
    assert uploaded is not None
    expected = uploaded["uploadDate"].replace(tzinfo=timezone.utc).strftime(HTTP_DATE)
    assert response.headers["Last-Modified"] == expected


def test_etag_without_digest_is_stable_and_distinct(server: LiveServer, put_file: PutFile) -> None:
    first, second = put_file("a.bin", b"same"), put_file("b.bin", b"same")
    tag = get(server, f"/fs/{first}").headers["ETag"]
    assert tag == get(server, f"/fs/{first}").headers["ETag"]
    assert tag != get(server, f"/fs/{second}").headers["ETag"]
    assert tag.startswith('"') and not tag.startswith("W/")


def test_a_range_reads_only_its_chunks(
    server: LiveServer, video: ObjectId, sync_db: SyncDB
) -> None:
    # Without chunks 0-4 a read from chunk 0 would fail; a range in chunks 5-6 must not notice.
    sync_db["fs.chunks"].delete_many({"files_id": video, "n": {"$lt": 5}})
    response = get(server, f"/fs/{video}", Range="bytes=90000-")
    assert response.status_code == 206
    assert response.content == DATA[90000:]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ({"$unset": {"data": ""}}, "chunk 3 is missing"),
        ({"$set": {"data": b"short"}}, "chunk 3 has 5 bytes"),
    ],
)
def test_corrupt_file_aborts_the_connection_and_logs_one_line(
    server: LiveServer,
    video: ObjectId,
    sync_db: SyncDB,
    caplog: pytest.LogCaptureFixture,
    damage: dict[str, Any],
    reason: str,
) -> None:
    sync_db["fs.chunks"].update_one({"files_id": video, "n": 3}, damage)
    with (
        caplog.at_level(logging.ERROR, logger="gridserve"),
        pytest.raises(requests.exceptions.ChunkedEncodingError),
    ):
        get(server, f"/fs/{video}")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert reason in errors[0].getMessage()
    assert get(server, f"/fs/{video}", Range="bytes=0-9").content == DATA[:10]  # still up


def test_a_missing_first_chunk_is_a_500_before_any_byte(
    server: LiveServer, video: ObjectId, sync_db: SyncDB, caplog: pytest.LogCaptureFixture
) -> None:
    sync_db["fs.chunks"].delete_one({"files_id": video, "n": 0})
    with caplog.at_level(logging.ERROR, logger="gridserve"):
        response = get(server, f"/fs/{video}")
    assert response.status_code == 500
    assert "ETag" not in response.headers and "Content-Range" not in response.headers
    errors = [
        r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("gridserve")
    ]
    assert len(errors) == 1
    assert "chunk 0 is missing" in errors[0].getMessage()
    assert get(server, f"/fs/{video}", Range="bytes=20000-20009").content == DATA[20000:20010]


@pytest.mark.parametrize("range_header", [None, "bytes=20000-20009", "bytes=0-9,30000-30009"])
def test_a_file_deleted_by_another_client_is_404_though_recently_served(
    server: LiveServer, video: ObjectId, sync_db: SyncDB, range_header: str | None
) -> None:
    headers = {"Range": range_header} if range_header else {}
    assert get(server, f"/fs/{video}", **headers).status_code in (200, 206)
    gridfs.GridFSBucket(sync_db).delete(video)  # behind the server's back, within its cache time
    response = get(server, f"/fs/{video}", **headers)
    assert response.status_code == 404
    assert get(server, f"/fs/{video}").status_code == 404


def test_missing_last_chunks_are_detected(
    server: LiveServer, video: ObjectId, sync_db: SyncDB
) -> None:
    sync_db["fs.chunks"].delete_many({"files_id": video, "n": {"$gte": 5}})
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get(server, f"/fs/{video}")


def test_length_longer_than_the_chunks_is_detected(
    server: LiveServer, video: ObjectId, sync_db: SyncDB
) -> None:
    sync_db["fs.files"].update_one({"_id": video}, {"$set": {"length": len(DATA) + 50_000}})
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get(server, f"/fs/{video}")


def test_motor_database_is_accepted(mongo_uri: str, db_name: str, video: ObjectId) -> None:
    motor_asyncio = pytest.importorskip("motor.motor_asyncio")

    def make_storage() -> GridFSStorage:
        return GridFSStorage(motor_asyncio.AsyncIOMotorClient(mongo_uri)[db_name])

    server = LiveServer(make_storage).start()
    try:
        response = get(server, f"/fs/{video}", Range="bytes=20000-20009")
        assert response.status_code == 206
        assert response.content == DATA[20000:20010]
        assert get(server, "/fs/show/ep1/clip.webm").content == DATA
    finally:
        server.stop()


def test_unreachable_database_is_503_with_retry_after() -> None:
    def make_storage() -> GridFSStorage:
        # Nothing listens on port 1; fail fast.
        return GridFSStorage.from_uri(
            "mongodb://127.0.0.1:1/x", serverSelectionTimeoutMS=300, connectTimeoutMS=300
        )

    server = LiveServer(make_storage).start()
    try:
        response = get(server, "/fs/anything.webm")
        assert response.status_code == 503
        assert response.headers["Retry-After"].isdigit()
    finally:
        server.stop()
