"""Resumable uploads on local disk beyond the contract: crashes, another process, the layout
(gridserve/storage/localuploads.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gridserve.storage import FileNotFound, InvalidKey, LocalStorage
from gridserve.storage.resumable import UploadLocked, UploadNotFound
from tests.conftest import report_figure
from tests.test_upload_memory import MIB, peak_rss, reset_peak

DATA = os.urandom(200_000)

# Another process: begins nothing, appends garbage to an upload, says so, then hangs (the
# parent kills it with SIGKILL: a crash between writing the bytes and storing the offset).
CHILD = """
import asyncio, sys
from gridserve.storage import LocalStorage

async def main():
    storage = LocalStorage(sys.argv[1])

    async def chunks():
        yield b"G" * 300_000
        print("written", flush=True)
        await asyncio.sleep(3600)

    await storage.append_upload(sys.argv[2], 0, chunks())

asyncio.run(main())
"""


async def pieces(data: bytes, size: int = 50_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def later(hours: float = 1) -> datetime:
    return datetime.now(timezone.utc) + timedelta(hours=hours)


async def test_another_process_locks_then_crashes(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    state = await storage.begin_upload(
        "crash.bin", length=None, owner="", metadata={}, expires_at=later()
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(tmp_path), state.id, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        assert line.strip() == b"written"
        with pytest.raises(UploadLocked):  # the other process holds the lock
            await storage.append_upload(state.id, 0, pieces(DATA))
        with pytest.raises(UploadLocked):
            await storage.terminate_upload(state.id)
    finally:
        child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(child.wait(), 30)
    bytes_file = tmp_path / ".gridserve" / "uploads" / f"{state.id}.bin"
    assert bytes_file.stat().st_size == 300_000  # written, never counted
    assert (await storage.upload_state(state.id)).offset == 0
    # the lock died with the process; the garbage past the stored offset is cut off
    state = await storage.append_upload(state.id, 0, pieces(DATA), length=len(DATA))
    info = await storage.complete_upload(state.id)
    assert info.length == len(DATA)
    assert (tmp_path / "crash.bin").read_bytes() == DATA
    assert info.md5 == hashlib.md5(DATA, usedforsecurity=False).hexdigest()


async def test_a_completion_that_crashed_leaves_a_state_the_sweep_removes(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    state = await storage.begin_upload(
        "half.bin", length=10, owner="", metadata={}, expires_at=later(-1)
    )
    uploads = tmp_path / ".gridserve" / "uploads"
    (uploads / f"{state.id}.bin").unlink()  # as if renamed into place, then the crash
    with pytest.raises(UploadNotFound):
        await storage.upload_state(state.id)
    expired = await storage.expired_uploads(datetime.now(timezone.utc))
    assert [u.id for u in expired] == [state.id]
    await storage.terminate_upload(state.id)
    assert list(uploads.iterdir()) == []
    with pytest.raises(UploadNotFound):
        await storage.terminate_upload(state.id)


async def test_private_and_with_the_mode_of_a_saved_file(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    state = await storage.begin_upload(
        "a/b.bin", length=len(DATA), owner="", metadata={}, expires_at=later()
    )
    await storage.append_upload(state.id, 0, pieces(DATA[:1000]))
    for key in (f".gridserve/uploads/{state.id}.bin", f".gridserve/uploads/{state.id}.json"):
        with pytest.raises(FileNotFound):
            await storage.resolve(key)
    assert [info async for info in storage.list()] == []
    assert not (tmp_path / "a").exists()  # not even its folder before completion
    await storage.append_upload(state.id, 1000, pieces(DATA[1000:]))
    await storage.complete_upload(state.id)
    saved = await storage.save("saved.bin", pieces(b"x"))
    mode = stat.S_IMODE((tmp_path / "a" / "b.bin").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / saved.filename).stat().st_mode)
    assert sorted(p.name for p in (tmp_path / ".gridserve" / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    "size_mib", [128, pytest.param(1024, marks=pytest.mark.slow)], ids=["128MiB", "1GiB"]
)
async def test_memory_of_a_large_upload_in_8_mib_appends(tmp_path: Path, size_mib: int) -> None:
    """Peak RSS grows by a few MiB whatever the size: appends stream to disk, and completion
    in another process (no running digests) reads the bytes back a block at a time."""
    block = os.urandom(MIB)
    writer = LocalStorage(tmp_path)
    state = await writer.begin_upload(
        "big.bin", length=size_mib * MIB, owner="", metadata={}, expires_at=later()
    )
    expected = hashlib.sha256()
    for _ in range(size_mib):
        expected.update(block)

    async def eight_mib() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield block

    await writer.upload_state(state.id)  # warm up the code paths
    reset_peak()
    before = peak_rss()
    while state.offset < size_mib * MIB:
        state = await writer.append_upload(state.id, state.offset, eight_mib())
    info = await LocalStorage(tmp_path).complete_upload(state.id)
    growth = peak_rss() - before
    assert info.metadata["sha256"] == expected.hexdigest()
    report_figure(
        f"local: {size_mib} MiB resumable upload (8 MiB appends, completion re-reading) "
        f"grew peak RSS by {growth / MIB:.1f} MiB"
    )
    (tmp_path / "big.bin").unlink()  # pytest keeps the last runs' directories
    assert growth < 8 * MIB


async def test_a_cancelled_append_keeps_what_it_received(tmp_path: Path) -> None:
    """A shutdown cancels appends in flight: what arrived is stored, as when a client leaves."""
    storage = LocalStorage(tmp_path)
    state = await storage.begin_upload(
        "cut.bin", length=len(DATA), owner="", metadata={}, expires_at=later()
    )
    arrived = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield DATA[:70_000]
        arrived.set()
        await asyncio.sleep(3600)

    append = asyncio.ensure_future(storage.append_upload(state.id, 0, stalls()))
    await asyncio.wait_for(arrived.wait(), 30)
    await asyncio.sleep(0.01)
    append.cancel()
    with pytest.raises(asyncio.CancelledError):
        await append
    assert (await LocalStorage(tmp_path).upload_state(state.id)).offset == 70_000
    state = await storage.append_upload(state.id, 70_000, pieces(DATA[70_000:]))
    info = await storage.complete_upload(state.id)  # running digests: kept across the cut
    assert info.metadata["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert (tmp_path / "cut.bin").read_bytes() == DATA


async def test_a_name_that_can_never_be_written_is_refused_at_the_start(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    await storage.save("a", pieces(b"a file"))
    (tmp_path / "folder").mkdir()
    for name in ("a/b.bin", "folder"):
        with pytest.raises(InvalidKey):
            await storage.begin_upload(name, length=1, owner="", metadata={}, expires_at=later())
    assert not (tmp_path / ".gridserve" / "uploads").exists() or not any(
        (tmp_path / ".gridserve" / "uploads").iterdir()
    )


async def test_with_io_threads(tmp_path: Path) -> None:
    """io_threads=True (a slow or network file system): the same, every call off the loop."""
    storage = LocalStorage(tmp_path, io_threads=True)
    state = await storage.begin_upload(
        "t.bin", length=len(DATA), owner="", metadata={}, expires_at=later()
    )
    state = await storage.append_upload(state.id, 0, pieces(DATA[:123_456]))
    assert (await storage.upload_state(state.id)).head == DATA[:8192]
    state = await storage.append_upload(state.id, 123_456, pieces(DATA[123_456:]))
    info = await storage.complete_upload(state.id)
    assert (tmp_path / "t.bin").read_bytes() == DATA
    assert info.md5 == hashlib.md5(DATA, usedforsecurity=False).hexdigest()
