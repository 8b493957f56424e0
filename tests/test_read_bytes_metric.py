"""``gridserve_storage_read_bytes_total{storage}``: what the handlers read from each storage."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable

import pytest
import requests

from tests.conftest import BACKENDS, PutFile, report_figure
from tests.livehttp import LiveServer

pytestmark = pytest.mark.parametrize("backend", BACKENDS, indirect=True)

DATA = os.urandom(70_000)
MIB = 1024 * 1024


def read_bytes(server: LiveServer, backend: str) -> float:
    text = requests.get(server.url("/metrics"), timeout=10).text
    found = re.search(
        rf'^gridserve_storage_read_bytes_total\{{storage="{backend}"\}} (\S+)$', text, re.M
    )
    return float(found.group(1)) if found else 0.0


def test_counts_bytes_read_per_storage(server: LiveServer, put_file: PutFile, backend: str) -> None:
    put_file("clip.webm", DATA)
    assert read_bytes(server, backend) == 0
    assert requests.get(server.url("/fs/clip.webm"), timeout=10).content == DATA
    assert read_bytes(server, backend) == len(DATA)
    ranged = requests.get(server.url("/fs/clip.webm"), headers={"Range": "bytes=10-19,-5"})
    assert ranged.status_code == 206
    assert read_bytes(server, backend) == len(DATA) + 15
    # HEAD, 304 and errors read nothing.
    requests.head(server.url("/fs/clip.webm"), timeout=10)
    requests.get(server.url("/fs/clip.webm"), headers={"If-Match": '"nope"'}, timeout=10)
    assert read_bytes(server, backend) == len(DATA) + 15


def stalled_client_cost(server: LiveServer, backend: str) -> float:
    """Storage bytes read for a client that asks for a large file and reads nothing."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(b"GET /fs/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        readings, deadline = [-1.0], time.monotonic() + 60
        while time.monotonic() < deadline:  # until the server stops reading: it is blocked
            time.sleep(0.5)
            readings.append(read_bytes(server, backend))
            if readings[-3:] == [readings[-1]] * 3:
                return readings[-1]
    raise AssertionError("the server kept reading for a client that reads nothing")


def test_default_send_buffer_bounds_what_a_gone_player_costs(
    serve: Callable[..., LiveServer], put_file: PutFile, backend: str
) -> None:
    if backend != "local":
        pytest.skip("the send buffer is the handler's: one storage shows it")
    put_file("big.bin", os.urandom(24 * MIB))
    default = stalled_client_cost(serve(), backend)
    autotuned = stalled_client_cost(serve(send_buffer=0), backend)
    report_figure(
        f"stalled client: {default / MIB:.1f} MiB read from the storage with the default send "
        f"buffer, {autotuned / MIB:.1f} MiB with the kernel's autotuning"
    )
    assert default < 3 * MIB
    assert default < autotuned
