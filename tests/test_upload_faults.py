"""Uploads under faults: every early end leaves nothing behind and ends its request, and the
client reads the refusal (issue "Uploads under faults")."""

from __future__ import annotations

import asyncio
import http.client
import random
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from tornado.httputil import HTTPServerRequest

from gridserve.acl import Action, default_acl
from gridserve.app import combined_log_line
from gridserve.uploads import UploadPolicy
from tests.livehttp import LiveServer
from tests.test_uploads_http import AUTH, TOKEN, WEBM, eventually

MIB = 1024 * 1024
LIMIT = 8 * MIB
BIG = b"\x1aE\xdf\xa3" + bytes(9 * MIB - 4)  # over LIMIT, under the lingering byte bound


def metric(server: LiveServer, name: str) -> float:
    text = requests.get(server.url("/metrics"), timeout=10).text
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def settled(server: LiveServer) -> None:
    """Nothing in flight: no request (but the /metrics one asking), no stream, no upload."""
    assert server.app.settings["gridserve_tracker"].active == 0
    assert metric(server, "gridserve_uploads_in_flight") == 0
    assert metric(server, "gridserve_streams_in_flight") == 0


def raw_put(
    port: int, name: str, body: bytes, headers: dict[str, str], send_body: bool = True
) -> tuple[int, str]:
    """http.client, which sends the whole body before reading the answer (no Expect)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("PUT", f"/fs/{name}")
        conn.putheader("Content-Length", str(len(body)))
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.endheaders()
        if send_body:
            conn.send(body)
        answer = conn.getresponse()
        return answer.status, answer.read().decode()
    finally:
        conn.close()


@pytest.fixture
def limited(serve: Callable[..., LiveServer]) -> LiveServer:
    return serve(
        acl=default_acl(upload_token=TOKEN),
        upload_policy=UploadPolicy(max_size=LIMIT, on_conflict="reject"),
    )


def test_streamed_413_leaves_no_orphan_chunk_on_gridfs(
    limited: LiveServer, nothing_left: Callable[[], None]
) -> None:
    """Issue 14, case 1: chunked PUT of 9 MiB in 1 MiB pieces over an 8 MiB limit."""

    def pieces() -> Iterator[bytes]:
        for i in range(9):
            yield BIG[i * MIB : (i + 1) * MIB]

    answer = requests.put(limited.url("/fs/toolarge2.bin"), data=pieces(), headers=AUTH, timeout=30)
    assert answer.status_code == 413
    eventually(nothing_left)


# -- refusals the client reads ---------------------------------------------------------------


def test_refusals_of_a_whole_body_sent_before_reading_arrive(
    limited: LiveServer, nothing_left: Callable[[], None]
) -> None:
    """Issue 14, case 3: without lingering, http.client saw ConnectionResetError."""
    assert raw_put(limited.port, "big.webm", BIG, AUTH)[0] == 413
    assert raw_put(limited.port, "big.webm", BIG, {})[0] == 401
    assert raw_put(limited.port, "big.webm", BIG, {"Authorization": "Bearer nope"})[0] == 403
    assert raw_put(limited.port, "tool.exe", BIG[: 4 * MIB], AUTH)[0] == 415
    nothing_left()
    assert raw_put(limited.port, "taken.webm", WEBM, AUTH)[0] == 201
    assert raw_put(limited.port, "taken.webm", BIG[: 4 * MIB], AUTH)[0] == 409
    streamed = requests.put(
        limited.url("/fs/big.webm"), data=iter([BIG[:MIB]] * 9), headers=AUTH, timeout=30
    )
    assert streamed.status_code == 413
    eventually(lambda: settled(limited))


def test_authorisation_is_decided_first(limited: LiveServer) -> None:
    """A stranger learns nothing from a 409 or a 413: 401 whatever else is wrong."""
    assert raw_put(limited.port, "taken.webm", WEBM, AUTH)[0] == 201
    assert raw_put(limited.port, "taken.webm", BIG, {})[0] == 401
    assert raw_put(limited.port, "taken.webm", WEBM, {})[0] == 401
    assert raw_put(limited.port, "taken.webm", BIG, AUTH)[0] == 413
    assert raw_put(limited.port, "taken.webm", WEBM, AUTH)[0] == 409


def test_expect_100_continue_gets_the_refusal_before_sending_the_body(
    limited: LiveServer,
) -> None:
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as sock:
        sock.sendall(
            f"PUT /fs/big.webm HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Length: {len(BIG)}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        head = sock.recv(4096).decode()
    assert head.startswith("HTTP/1.1 413 ")


@pytest.mark.media
@pytest.mark.parametrize(
    ("name", "headers", "status"),
    [("big.webm", AUTH, 413), ("big.webm", {}, 401), ("tool.exe", AUTH, 415)],
)
def test_curl_with_expect_reads_each_refusal(
    limited: LiveServer, tmp_path: Path, name: str, headers: dict[str, str], status: int
) -> None:
    body = tmp_path / "body"
    body.write_bytes(BIG if status == 413 else BIG[: 4 * MIB])  # curl: Expect over 1 MiB
    args = [f"-H{k}: {v}" for k, v in headers.items()]
    done = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T", str(body), *args,
         limited.url(f"/fs/{name}")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.stdout == str(status), done.stderr


# -- disconnects -----------------------------------------------------------------------------


class WaitingACL:
    """An ACL whose write decision waits (an auth service that hangs): a request is held in
    prepare() for as long as it takes."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    async def __call__(self, request: HTTPServerRequest, action: Action, target: Any) -> bool:
        if action != "write":
            return True
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return True


def test_a_client_gone_during_prepare_ends_its_request(
    serve: Callable[..., LiveServer],
) -> None:
    acl = WaitingACL()
    server = serve(acl=acl)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"PUT /fs/x.webm HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        sock.sendall(WEBM[:50_000])
        eventually(lambda: assert_active(server, 1))
    assert acl.cancelled.wait(10)  # the awaited lookup was cancelled, not left to run
    eventually(lambda: settled(server))
    assert 'status="499"' in requests.get(server.url("/metrics"), timeout=10).text


def assert_active(server: LiveServer, count: int) -> None:
    assert server.app.settings["gridserve_tracker"].active == count


@pytest.mark.parametrize("backend", ["gridfs", "local", "s3"], indirect=True)
def test_abandoned_uploads_all_end_and_leave_nothing(
    writable_server: LiveServer, nothing_left: Callable[[], None], backend: str
) -> None:
    """Issue 14, case 2: uploads of a declared 2 MiB abandoned at random points (200 on
    GridFS, 40 elsewhere): every one ends, the gauges drop to 0, nothing is left."""
    count = 200 if backend == "gridfs" else 40
    size = 2 * MIB
    body = b"\x1aE\xdf\xa3" + bytes(size - 4)
    rng = random.Random(14)

    def abandon(i: int) -> None:
        cut = rng.randrange(0, size)
        with socket.create_connection(("127.0.0.1", writable_server.port), timeout=30) as s:
            s.sendall(
                f"PUT /fs/aborted{i}.webm HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {TOKEN}\r\nContent-Length: {size}\r\n\r\n".encode()
            )
            s.sendall(body[:cut])

    threads: list[threading.Thread] = []
    for i in range(count):
        threads.append(threading.Thread(target=abandon, args=(i,)))
        threads[-1].start()
        if len(threads) >= 25:
            for thread in threads:
                thread.join(30)
            threads = []
    for thread in threads:
        thread.join(30)
    eventually(lambda: settled(writable_server), timeout=60)
    ended = 'gridserve_requests_total{method="PUT",status="499"}'
    eventually(lambda: ended_as(writable_server, ended, count), timeout=30)
    eventually(nothing_left, timeout=30)


def ended_as(server: LiveServer, name: str, count: int) -> None:
    """Every abandoned request ended (its handler finished and was logged), not just left."""
    assert metric(server, name) == count


@pytest.fixture
def writable_server(serve: Callable[..., LiveServer]) -> LiveServer:
    return serve(acl=default_acl(upload_token=TOKEN))


def leave_mid_download(server: LiveServer, data: bytes) -> None:
    """Stores ``data`` as ``long.bin``, starts downloading it on a socket that reads one
    buffer, leaves while the server streams, and waits until the server has settled."""
    assert requests.put(server.url("/fs/long.bin"), data=data, headers=AUTH).ok
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.sendall(b"GET /fs/long.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(16384)
        eventually(lambda: assert_active(server, 1))
        time.sleep(0.2)
    eventually(lambda: settled(server))


def test_a_client_gone_mid_download_ends_as_499(
    writable_server: LiveServer,
) -> None:
    leave_mid_download(writable_server, bytes(6 * MIB))
    text = requests.get(writable_server.url("/metrics"), timeout=10).text
    assert 'method="GET",status="499"' in text


def test_a_download_the_client_left_logs_the_bytes_sent_not_its_length(
    serve: Callable[..., LiveServer],
) -> None:
    lines: list[str] = []
    server = serve(
        acl=default_acl(upload_token=TOKEN),
        log_function=lambda handler: lines.append(combined_log_line(handler)),
    )
    data = bytes(6 * MIB)
    leave_mid_download(server, data)
    (line,) = [line for line in lines if '"GET /fs/long.bin ' in line]
    status, sent = re.search(r'" (\d+) (\S+) "', line).groups()  # type: ignore[union-attr]
    assert status == "499"
    assert int(sent) < len(data), line  # what went out before it left, not Content-Length
