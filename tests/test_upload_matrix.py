"""The fault matrix: every way an upload ends early x a declared or a chunked body, on every
storage. Each asserts the status the client *reads* (http.client, which sends its body without
``Expect``), that the request ended, and that nothing is left: no file, chunk, temporary file
or pending S3 multipart upload."""

from __future__ import annotations

import http.client
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gridserve.acl import default_acl
from gridserve.uploads import VIDEO, Only, UploadPolicy
from tests.conftest import BACKENDS
from tests.livehttp import LiveServer
from tests.test_upload_faults import MIB, settled
from tests.test_uploads_http import TOKEN, eventually

pytestmark = pytest.mark.parametrize("backend", BACKENDS, indirect=True)

LIMIT = 6 * MIB
VIDEO_BODY = b"\x1aE\xdf\xa3" + bytes(4 * MIB)  # sniffs as video/webm
PNG_BODY = b"\x89PNG\r\n\x1a\n" + bytes(4 * MIB)  # not a video
OVER = b"\x1aE\xdf\xa3" + bytes(LIMIT + MIB)


@pytest.fixture
def target(serve: Callable[..., LiveServer]) -> LiveServer:
    return serve(
        acl=default_acl(upload_token=TOKEN),
        upload_policy=UploadPolicy(types=Only(VIDEO), max_size=LIMIT),
    )


def send(port: int, name: str, body: bytes, chunked: bool, cut: int | None = None) -> int:
    """PUTs ``body`` (declared or chunked in 256 KiB pieces); with ``cut``, leaves after that
    many body bytes and returns 0. Otherwise returns the status read."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.putrequest("PUT", f"/fs/{name}")
        conn.putheader("Authorization", f"Bearer {TOKEN}")
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        else:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        sent = body if cut is None else body[:cut]
        for i in range(0, len(sent), 256 * 1024):
            piece = sent[i : i + 256 * 1024]
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        if cut is not None:
            assert conn.sock is not None
            conn.sock.shutdown(socket.SHUT_RDWR)
            return 0
        if chunked:
            conn.send(b"0\r\n\r\n")
        return conn.getresponse().status
    finally:
        conn.close()


def pieces(body: bytes) -> Iterator[bytes]:
    for i in range(0, len(body), 256 * 1024):
        yield body[i : i + 256 * 1024]


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
@pytest.mark.parametrize(
    ("case", "body", "status"),
    [
        ("over-limit.webm", OVER, 413),
        ("type-refused.bin", PNG_BODY, 415),
        ("accepted.webm", VIDEO_BODY, 201),
    ],
)
def test_refusals(
    target: LiveServer,
    nothing_left: Callable[[], None],
    chunked: bool,
    case: str,
    body: bytes,
    status: int,
) -> None:
    assert send(target.port, case, body, chunked) == status
    eventually(lambda: settled(target))
    if status != 201:
        eventually(nothing_left)


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
@pytest.mark.parametrize("percent", [0, 50, 99])
def test_client_gone(
    target: LiveServer, nothing_left: Callable[[], None], chunked: bool, percent: int
) -> None:
    send(target.port, "gone.webm", VIDEO_BODY, chunked, cut=len(VIDEO_BODY) * percent // 100)
    eventually(lambda: settled(target), timeout=30)
    eventually(nothing_left)


@pytest.mark.media
@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
@pytest.mark.parametrize(
    ("case", "body", "token", "status"),
    [
        ("over-limit.webm", OVER, True, 413),
        ("type-refused.bin", PNG_BODY, True, 415),
        ("no-token.webm", VIDEO_BODY, False, 401),
    ],
)
def test_curl_with_expect_reads_each_refusal(
    target: LiveServer,
    nothing_left: Callable[[], None],
    tmp_path: Path,
    chunked: bool,
    case: str,
    body: bytes,
    token: bool,
    status: int,
) -> None:
    """curl sends ``Expect: 100-continue`` for bodies over 1 MiB: a refusal from the headers
    comes instead of ``100 Continue``, one found in the body (415 sniffed) while it streams."""
    path = tmp_path / "body"
    path.write_bytes(body)
    args = ["-H", f"Authorization: Bearer {TOKEN}"] if token else []
    if chunked:
        args += ["-H", "Transfer-Encoding: chunked"]
    done = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T", str(path), *args,
         target.url(f"/fs/{case}")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.stdout == str(status), done.stderr
    eventually(lambda: settled(target))
    eventually(nothing_left)
