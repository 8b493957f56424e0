"""Memory stays bounded whatever the upload size: peak RSS growth during a large streamed PUT.

The server runs in this process (a LiveServer thread); the client streams a generator that
reuses one buffer, so the peak growth measured is the server's buffering. Linux resets the
peak (VmHWM) when "5" is written to /proc/self/clear_refs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from gridserve.acl import default_acl
from tests.conftest import report_figure, upload_data
from tests.livehttp import LiveServer

MIB = 1024 * 1024


def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


@pytest.mark.parametrize(
    ("backend", "size_mib"), [("local", 256), ("gridfs", 48)], indirect=["backend"]
)
def test_streamed_upload_keeps_memory_bounded(
    serve: Callable[..., LiveServer], backend: str, size_mib: int
) -> None:
    server = serve(acl=default_acl(upload_token="t"))
    block = upload_data(MIB)

    def body() -> Iterator[bytes]:
        for _ in range(size_mib):
            yield block

    requests.get(server.url("/fs/"), timeout=10)  # warm up the server's code paths
    reset_peak()
    before = peak_rss()
    response = requests.put(
        server.url("/fs/big.bin"), data=body(), headers={"Authorization": "Bearer t"}, timeout=600
    )
    growth = peak_rss() - before
    assert response.status_code == 201, response.text
    assert response.json()["length"] == size_mib * MIB
    report_figure(
        f"{backend}: {size_mib} MiB streamed upload grew peak RSS by {growth / MIB:.1f} MiB"
    )
    assert growth < 24 * MIB
