"""Uploads cut short by the server itself: SIGTERM mid-upload, and a full disk (507)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gridserve.acl import default_acl
from tests.livehttp import LiveServer
from tests.s3server import S3Proxy
from tests.test_daemon import Daemon, daemons  # noqa: F401
from tests.test_storage_s3 import leftovers
from tests.test_upload_faults import MIB, settled
from tests.test_uploads_http import TOKEN, eventually

BODY = b"\x1aE\xdf\xa3" + bytes(8 * MIB)


def start_upload(
    port: int, chunked: bool, body: bytes = BODY, first: int = 4 * MIB
) -> socket.socket:
    """Sends the headers of a PUT of ``body`` and its ``first`` bytes, then nothing more."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    sock.sendall(
        f"PUT /fs/cut.webm HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"{length}\r\n\r\n".encode()
    )
    half = body[:first]
    sock.sendall(b"%x\r\n%s\r\n" % (len(half), half) if chunked else half)
    return sock


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
@pytest.mark.parametrize("where", ["gridfs", "local", "s3"])
def test_sigterm_mid_upload_leaves_nothing(
    tmp_path: Path,
    daemons: list[Daemon],  # noqa: F811
    request: pytest.FixtureRequest,
    where: str,
    chunked: bool,
) -> None:
    env: dict[str, str] = {}
    if where == "gridfs":
        mongo_uri: str = request.getfixturevalue("mongo_uri")
        db_name: str = request.getfixturevalue("db_name")
        base, _, query = mongo_uri.partition("?")
        storage = [f"{base.rstrip('/')}/{db_name}" + (f"?{query}" if query else "")]
    elif where == "local":
        (tmp_path / "d").mkdir()  # a --storage directory must exist (or be given --create)
        storage = [str(tmp_path / "d")]
    else:
        s3_server: S3Proxy = request.getfixturevalue("s3_server")
        s3_bucket: str = request.getfixturevalue("s3_bucket")
        options = s3_server.client_options()
        env = {
            "AWS_ACCESS_KEY_ID": options["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": options["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        storage = [f"s3://{s3_bucket}/media", "--s3-endpoint", s3_server.endpoint]
    daemon = Daemon(
        "--storage",
        *storage,
        "--upload-token",
        TOKEN,
        "--shutdown-timeout",
        "1",
        "--sweep-interval",
        "0",
        env=env,
    )
    daemons.append(daemon)
    if where == "s3":  # past the first 8 MiB part, so a multipart upload is pending
        sock = start_upload(daemon.port, chunked, BODY + bytes(12 * MIB), 12 * MIB)
        eventually(lambda: _pending_multipart(s3_server, s3_bucket))
    else:
        sock = start_upload(daemon.port, chunked)
    try:
        code, stderr = daemon.stop()
    finally:
        sock.close()
    assert code == 0, stderr
    if where == "gridfs":
        db = request.getfixturevalue("sync_client")[db_name]
        assert db["fs.files"].count_documents({}) == 0
        assert db["fs.chunks"].count_documents({}) == 0
    elif where == "local":
        root = tmp_path / "d"
        assert [p for p in root.rglob("*") if p.is_file()] == []
    else:  # no object, no pending multipart upload
        assert asyncio.run(leftovers(s3_server, s3_bucket)) == ([], [])


def _pending_multipart(server: S3Proxy, bucket: str) -> None:
    assert asyncio.run(leftovers(server, bucket))[1] != []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs: needs root and mount(2) (skipped where the sandbox forbids it)."""
    root = tmp_path / "small"
    root.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(root)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_a_full_disk_is_507_and_leaves_no_temporary_file(small_disk: Path, chunked: bool) -> None:
    from gridserve.storage.local import LocalStorage

    server = LiveServer(
        lambda: LocalStorage(small_disk), acl=default_acl(upload_token=TOKEN)
    ).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.putrequest("PUT", "/fs/full.webm")
        conn.putheader("Authorization", f"Bearer {TOKEN}")
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        else:
            conn.putheader("Content-Length", str(len(BODY)))
        conn.endheaders()
        with contextlib.suppress(OSError):
            for i in range(0, len(BODY), 256 * 1024):
                piece = BODY[i : i + 256 * 1024]
                conn.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                conn.send(b"0\r\n\r\n")
        assert conn.getresponse().status == 507
        conn.close()
        eventually(lambda: settled(server))
        leftovers: Callable[[], list[Path]] = lambda: [  # noqa: E731
            p for p in small_disk.rglob("*") if p.is_file()
        ]
        eventually(lambda: _assert_empty(leftovers()))
    finally:
        server.stop()


def _assert_empty(found: list[Path]) -> None:
    assert found == []
