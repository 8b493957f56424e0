"""A tus client nobody here wrote (tuspy, PyPI) uploads 64 MiB into each storage through a
loopback proxy that cuts the connection twice mid-way; it resumes from the server's offset and
the file that results has the right sha256 and plays with ranges."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import requests
from tusclient.client import TusClient

from gridserve.acl import AllowReads, AnyOf, BearerToken
from tests.conftest import report_figure, upload_data
from tests.cutproxy import CuttingProxy
from tests.livehttp import LiveServer
from tests.test_daemon import Daemon
from tests.test_upload_memory import MIB, peak_rss, reset_peak
from tests.test_workers import daemons, workers

__all__ = ["backend", "daemons"]
from tests.tuslive import backend, stored

SIZE = 64 * 1024 * 1024
CHUNK = 16 * 1024 * 1024


@pytest.mark.slow
def test_tuspy_resumes_through_two_cuts(serve: Callable[..., LiveServer], backend: str) -> None:
    server = serve(acl=AnyOf(AllowReads(), BearerToken("secret")))
    data = upload_data(SIZE)
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


def test_tuspy_resumes_with_a_new_uploader_from_the_stored_url(
    serve: Callable[..., LiveServer], backend: str
) -> None:
    """An app that stopped (stop_at) and started again: a new uploader from the upload URL
    asks the server where to go on (HEAD) and finishes; sha1 checksums on every PATCH."""
    server = serve(acl=AnyOf(AllowReads(), BearerToken("secret")))
    data = upload_data(3 * 1024 * 1024 + 5)
    client = TusClient(server.url("/fs/.uploads/"), headers={"Authorization": "Bearer secret"})
    options = {"chunk_size": 1024 * 1024, "upload_checksum": True}
    first = client.uploader(
        file_stream=io.BytesIO(data), metadata={"filename": "again.bin"}, **options
    )
    first.upload(stop_at=2 * 1024 * 1024)
    assert first.offset == 2 * 1024 * 1024
    again = client.uploader(file_stream=io.BytesIO(data), url=first.url, **options)
    assert again.offset == 2 * 1024 * 1024  # from the server's HEAD
    again.upload()
    assert requests.get(server.url("/fs/again.bin"), timeout=30).content == data


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "size_mib"), [("local", 1024)], indirect=["backend"])
def test_a_1_gib_upload_in_8_mib_patches_keeps_memory_bounded(
    serve: Callable[..., LiveServer], backend: str, size_mib: int
) -> None:
    """The server runs in this process; the client's PATCH bodies are generators reusing one
    buffer, so the peak RSS growth is the server's."""
    server = serve(acl=AnyOf(AllowReads(), BearerToken("secret")))
    auth = {"Authorization": "Bearer secret", "Tus-Resumable": "1.0.0"}
    block = upload_data(MIB)
    created = requests.post(
        server.url("/fs/.uploads/"),
        headers={
            **auth,
            "Upload-Length": str(size_mib * MIB),
            "Upload-Metadata": "filename YmlnLmJpbg==",
        },
        timeout=30,
    )
    assert created.status_code == 201
    url = server.url(created.headers["Location"])

    def body() -> Iterator[bytes]:
        for _ in range(8):
            yield block

    reset_peak()
    before = peak_rss()
    started = time.monotonic()
    for offset in range(0, size_mib * MIB, 8 * MIB):
        headers = {
            **auth,
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
        }
        answer = requests.patch(url, headers=headers, data=body(), timeout=120)
        assert answer.status_code == 204, answer.text
    growth = peak_rss() - before
    elapsed = time.monotonic() - started
    assert stored(server, "big.bin").length == size_mib * MIB
    report_figure(
        f"tus {backend}: {size_mib} MiB in 8 MiB PATCHes grew peak RSS by {growth / MIB:.1f} MiB"
        f" ({size_mib / elapsed:.0f} MiB/s)"
    )
    assert growth < 24 * MIB


def test_the_daemons_workers_resume_each_others_uploads(
    tmp_path: Path,
    daemons: list[Daemon],
) -> None:
    """``gridserve serve --processes 2``: each PATCH on a new connection lands on either
    worker, and the upload still goes on from where the other stopped (state on disk, not
    in a process); ``--upload-expiry`` is what HEAD announces."""
    (tmp_path / "store").mkdir()
    daemon = Daemon(
        "--storage", str(tmp_path / "store"), "--processes", "2",
        "--upload-token", "secret", "--upload-expiry", "30m",
    )  # fmt: skip
    daemons.append(daemon)
    workers(daemon, 2)
    auth = {"Authorization": "Bearer secret", "Tus-Resumable": "1.0.0"}
    data = upload_data(16 * 65536)
    created = requests.post(
        daemon.url("/fs/.uploads/"),
        headers={**auth, "Upload-Length": str(len(data)), "Upload-Metadata": "filename d2suYmlu"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    url = daemon.url(created.headers["Location"])
    for offset in range(0, len(data), 65536):
        state = requests.head(url, headers=auth, timeout=10)  # a new connection each time
        assert state.headers["Upload-Offset"] == str(offset)
        expires = parsedate_to_datetime(state.headers["Upload-Expires"]).timestamp()
        assert 29 * 60 < expires - time.time() <= 30 * 60 + 1
        answer = requests.patch(
            url,
            headers={
                **auth,
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
            },
            data=data[offset : offset + 65536],
            timeout=10,
        )
        assert answer.status_code == 204, answer.text
    assert requests.get(daemon.url("/fs/wk.bin"), timeout=10).content == data
    code, stderr = daemon.stop()
    assert code == 0, stderr
