"""A tus client nobody here wrote (tuspy, PyPI) uploads 64 MiB into each storage through a
loopback proxy that cuts the connection twice mid-way; it resumes from the server's offset and
the file that results has the right sha256 and plays with ranges."""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Callable

import pytest
import requests
from tusclient.client import TusClient

from gridserve.acl import AllowReads, AnyOf, BearerToken
from tests.cutproxy import CuttingProxy
from tests.livehttp import LiveServer
from tests.test_tus_protocol import BACKENDS, stored, takes_uploads

SIZE = 64 * 1024 * 1024
CHUNK = 16 * 1024 * 1024


@pytest.fixture(params=list(BACKENDS), ids=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    if not takes_uploads(request.param):
        pytest.skip(f"{request.param} takes no resumable uploads yet")
    return str(request.param)


@pytest.mark.slow
def test_tuspy_resumes_through_two_cuts(serve: Callable[..., LiveServer], backend: str) -> None:
    server = serve(acl=AnyOf(AllowReads(), BearerToken("secret")))
    data = os.urandom(SIZE)
    # Cut in the middle of the second and of the fourth PATCH (creation and HEADs are small).
    proxy = CuttingProxy(server.port, cuts=[CHUNK + CHUNK // 3, 3 * CHUNK + CHUNK // 2]).start()
    try:
        client = TusClient(proxy.url("/fs/.uploads/"), headers={"Authorization": "Bearer secret"})
        uploader = client.uploader(
            file_stream=io.BytesIO(data),
            chunk_size=CHUNK,
            metadata={"filename": f"tuspy/{backend}.bin", "filetype": "application/octet-stream"},
            retries=10,
            retry_delay=1,
        )
        started = time.monotonic()
        uploader.upload()
        elapsed = time.monotonic() - started
    finally:
        proxy.close()
    assert proxy.cut == 2
    assert uploader.offset == SIZE
    print(f"tuspy: 64 MiB into {backend} through 2 cuts in {elapsed:.1f}s")

    listing = requests.get(server.url("/fs/tuspy/"), timeout=30).json()["files"]
    assert [(f["filename"], f["length"]) for f in listing] == [(f"tuspy/{backend}.bin", SIZE)]
    info = stored(server, f"tuspy/{backend}.bin")
    assert info.metadata["sha256"] == hashlib.sha256(data).hexdigest()
    start = CHUNK + CHUNK // 3 - 1000  # across the first cut
    ranged = requests.get(
        server.url(f"/fs/tuspy/{backend}.bin"),
        headers={"Range": f"bytes={start}-{start + 99_999}"},
        timeout=30,
    )
    assert ranged.status_code == 206
    assert ranged.content == data[start : start + 100_000]
