"""What the CPU scenarios measure a running server with: its CPU time, its page faults, its
memory under stalled readers, and the clients that load it (curl, serial HTTP requests, a PUT).

A server's CPU is the user + system time of its whole process group (``/proc/<pid>/stat`` of
every process in it, and what they reaped): one figure for a single process and for
``--processes N`` (a supervisor and its workers) alike.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

from scripts.benchtools import MIB, PGRP, TICKS, TOKEN, Server, curl_command, live_processes

T = TypeVar("T")


def group_cpu(pgid: int) -> float:
    """CPU seconds used so far by every live process of process group ``pgid`` (and what each
    reaped): a server started in a session of its own, workers included."""
    group = live_processes(PGRP, pgid).values()
    return sum(int(f) for fields in group for f in fields[11:15]) / TICKS


def page_faults(pgid: int) -> int:
    """Minor page faults so far of the processes of group ``pgid``."""
    return sum(int(fields[7]) for fields in live_processes(PGRP, pgid).values())


def server_cpu(server: Server, work: Callable[..., T], *args: Any) -> tuple[T, float]:
    """Runs ``work(*args)``: (its result, CPU seconds the server spent meanwhile)."""
    assert server.process is not None
    before = group_cpu(server.process.pid)
    result = work(*args)
    time.sleep(0.2)  # let the server finish accounting for the last response
    return result, group_cpu(server.process.pid) - before


def curl_downloads(url: str, count: int) -> tuple[int, float]:
    """(bytes, seconds) of one curl downloading ``url`` whole ``count`` times in a row on one
    keep-alive connection."""
    command = curl_command(url, count)
    start = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return sum(int(n) for n in out.split()), time.perf_counter() - start


def serial_gets(server: Server, paths: list[str]) -> int:
    """GETs every path in turn on one keep-alive connection; the body bytes read."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    total = 0
    for path in paths:
        conn.request("GET", path)
        response = conn.getresponse()
        total += len(response.read())
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status}")
    conn.close()
    return total


def put(server: Server, name: str, data: bytes) -> None:
    """Uploads ``data`` as ``name`` (a PUT with the bench's token); 201 or an error."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
    conn.request("PUT", name, body=data, headers={"Authorization": f"Bearer {TOKEN}"})
    response = conn.getresponse()
    response.read()
    if response.status != 201:
        raise RuntimeError(f"PUT {name}: {response.status}")


def stalled_readers_rss(server: Server, count: int = 50) -> float:
    """MiB of resident memory the server grows by while ``count`` clients request the large
    file and read nothing (a 4 KiB receive buffer each), per client."""
    time.sleep(1.5)  # past the idle trim after the last download
    before = server.rss() / MIB
    clients = []
    for _ in range(count):
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", server.port))
        client.sendall(b"GET /fs/large.bin HTTP/1.1\r\nHost: bench\r\n\r\n")
        clients.append(client)
    time.sleep(4)
    grown = server.rss() / MIB - before
    for client in clients:
        client.close()
    return grown / count
