"""A full database answers uploads 507 Insufficient Storage (the client should not retry), not
503: GridFS on a test database whose disk really is full (FerretDB with its data directory on a
small tmpfs), for ``PUT``, a form ``POST``, a tus ``PATCH`` and a tus creation. The same path
as local storage's full disk (tests/test_upload_shutdown.py); MongoDB's own out-of-space
errors, which a test database cannot produce, are classified in
tests/test_storage_gridfs_errors.py."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest
import requests
from pymongo.errors import OperationFailure

from gridserve.acl import default_acl
from gridserve.storage.gridfs import GridFSStorage
from tests.conftest import upload_data
from tests.dbserver import FerretDB, ferretdb_binary
from tests.livehttp import LiveServer
from tests.test_upload_faults import MIB, settled
from tests.test_uploads_http import TOKEN, eventually

AUTH = {"Authorization": f"Bearer {TOKEN}"}
TUS = {"Tus-Resumable": "1.0.0", **AUTH}
BODY = upload_data(8 * MIB)  # twice the disk; never sniffed as refused (415)
DISK = "4m"


@pytest.fixture
def small_database(tmp_path: Path) -> Iterator[str]:
    """The URI of a FerretDB whose data directory is a 4 MiB tmpfs: needs root and mount(2)
    (skipped where the sandbox forbids it)."""
    root = tmp_path / "small"
    root.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(root)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    database = FerretDB(ferretdb_binary())
    logs, database.data_dir = database.data_dir, str(root)  # the log stays off the small disk
    try:
        database.start()
        yield f"{database.uri}full"
    finally:
        database.cleanup()
        shutil.rmtree(logs, ignore_errors=True)
        subprocess.run(["umount", "-l", str(root)], check=False)


@pytest.fixture
def server(small_database: str) -> Iterator[LiveServer]:
    live = LiveServer(
        lambda: GridFSStorage.from_uri(small_database), acl=default_acl(upload_token=TOKEN)
    ).start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def db(small_database: str) -> Iterator[pymongo.database.Database[dict[str, object]]]:
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(small_database)
    try:
        yield client.get_default_database()
    finally:
        client.close()


def send(port: int, method: str, path: str, headers: dict[str, str], body: bytes) -> int:
    """Sends the request and its body (as much as the server reads before it answers: a
    refusal may come, and the connection close, while the body is still going) and returns the
    answer's status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.putrequest(method, path)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            conn.putheader(name, value)
        conn.endheaders()
        with contextlib.suppress(OSError):
            for i in range(0, len(body), 256 * 1024):
                conn.send(body[i : i + 256 * 1024])
        return conn.getresponse().status
    finally:
        conn.close()


def nothing_stored(db: pymongo.database.Database[dict[str, object]]) -> None:
    assert db["fs.files"].count_documents({}) == 0
    assert db["fs.chunks"].count_documents({}) == 0


def test_a_put_past_the_space_left_is_507_and_keeps_nothing(
    server: LiveServer, db: pymongo.database.Database[dict[str, object]]
) -> None:
    assert send(server.port, "PUT", "/fs/big.webm", AUTH, BODY) == 507
    eventually(lambda: settled(server))
    eventually(lambda: nothing_stored(db))


def test_a_form_post_past_the_space_left_is_507_and_keeps_nothing(
    server: LiveServer, db: pymongo.database.Database[dict[str, object]]
) -> None:
    boundary = "gridserve-full"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="big.webm"\r\nContent-Type: video/webm\r\n\r\n'
        ).encode()
        + BODY
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    assert send(server.port, "POST", "/fs/", headers, form) == 507
    eventually(lambda: settled(server))
    eventually(lambda: nothing_stored(db))


def test_a_tus_patch_past_the_space_left_is_507_and_the_offset_stays(server: LiveServer) -> None:
    creation = requests.post(
        server.url("/fs/.uploads/"),
        headers={
            **TUS,
            "Upload-Length": str(len(BODY)),
            "Upload-Metadata": "filename YmlnLndlYm0=",  # big.webm
        },
        timeout=30,
    )
    assert creation.status_code == 201, creation.text
    path = creation.headers["Location"]
    headers = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    assert send(server.port, "PATCH", path, headers, BODY) == 507
    eventually(lambda: settled(server))
    resumed = requests.head(server.url(path), headers=TUS, timeout=30)
    assert resumed.status_code == 200
    assert resumed.headers["Upload-Offset"] == "0"  # the refused bytes are not counted


def test_a_tus_creation_on_a_full_database_is_507(
    server: LiveServer, db: pymongo.database.Database[dict[str, object]]
) -> None:
    with pytest.raises(OperationFailure, match="full"):  # the disk is full: proven, not assumed
        for _ in range(64):
            db["filler"].insert_one({"data": os.urandom(256 * 1024)})
    creation = requests.post(
        server.url("/fs/.uploads/"),
        headers={**TUS, "Upload-Length": "10", "Upload-Metadata": "filename YS50eHQ="},
        timeout=30,
    )
    assert creation.status_code == 507, creation.text
