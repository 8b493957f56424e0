"""GridFS resumable uploads, what only GridFS promises: the lease across processes (two
storages on their own clients stand for two processes or hosts), crash leftovers in the chunks,
nothing in ``fs.files`` before completion, the sweep and the upload records."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient, monitoring

from gridserve.storage import FileNotFound
from gridserve.storage.gridfs import GridFSStorage
from gridserve.storage.resumable import (
    Checksum,
    ChecksumMismatch,
    UploadConflict,
    UploadLocked,
    UploadNotFound,
)
from gridserve.sweep import sweep
from tests.test_storage_contract import pieces, read_all

DATA = os.urandom(10_000)
SOON = timedelta(hours=1)
DAY = 24 * 3600.0

# Another process appends garbage (one chunk at a time), says so, then hangs: the test kills it
# with SIGKILL between its chunk inserts and its offset update, holding a 2 s lease.
CHILD = """
import asyncio, sys
from pymongo import AsyncMongoClient, monitoring
from gridserve.storage.gridfs import GridFSStorage

async def main():
    client = AsyncMongoClient(sys.argv[1])
    db = client[sys.argv[2]]
    storage = GridFSStorage(db, chunk_size=1000, insert_batch=1000, lease_seconds=2)

    async def chunks():
        yield b"G" * 3700
        print("written", flush=True)
        await asyncio.sleep(3600)

    await storage.append_upload(sys.argv[3], 2500, chunks())

asyncio.run(main())
"""


def later(delta: timedelta = SOON) -> datetime:
    return datetime.now(timezone.utc) + delta


@pytest.fixture
async def other_db(mongo_uri: str, db_name: str) -> AsyncIterator[Any]:
    """The test's database through a client of its own: another process, another host."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    yield client[db_name]
    await client.close()


def small(db: Any, **options: Any) -> GridFSStorage:
    """Chunks of 1000 bytes, inserted two at a time: appends cross chunks and batches."""
    return GridFSStorage(db, chunk_size=1000, insert_batch=2000, **options)


async def begin(storage: GridFSStorage, length: int | None = len(DATA)) -> str:
    state = await storage.begin_upload(
        "clip.mp4",
        length=length,
        owner="ann",
        metadata={"filename": "clip.mp4"},
        expires_at=later(),
    )
    return state.id


async def held(data: bytes, gate: asyncio.Event, started: asyncio.Event) -> AsyncIterator[bytes]:
    """``data`` in two halves, the second once ``gate`` is set: an append in progress."""
    yield data[: len(data) // 2]
    started.set()
    await gate.wait()
    yield data[len(data) // 2 :]


def chunk_lengths(sync_db: Any, files_id: ObjectId) -> list[tuple[int, int]]:
    return [
        (doc["n"], len(doc["data"]))
        for doc in sync_db["fs.chunks"].find({"files_id": files_id}).sort("n", 1)
    ]


async def test_one_append_at_a_time_across_processes(async_db: Any, other_db: Any) -> None:
    first, second = small(async_db), small(other_db)
    upload_id = await begin(first)
    gate, started = asyncio.Event(), asyncio.Event()
    appending = asyncio.create_task(
        first.append_upload(upload_id, 0, held(DATA[:4000], gate, started))
    )
    await started.wait()
    with pytest.raises(UploadLocked):
        await second.append_upload(upload_id, 0, pieces(b"z" * 10))
    with pytest.raises(UploadLocked):  # the same process, another request: locked too
        await first.append_upload(upload_id, 0, pieces(b"z" * 10))
    gate.set()
    assert (await appending).offset == 4000
    # Released: the other process resumes where the first left off, and finishes.
    state = await second.append_upload(upload_id, 4000, pieces(DATA[4000:]))
    assert state.offset == len(DATA) and state.complete
    info = await second.complete_upload(upload_id, content_type="video/mp4")
    assert await read_all(first, await first.resolve("clip.mp4")) == DATA
    assert info.md5 == hashlib.md5(DATA).hexdigest()  # re-read: no process saw every byte
    assert info.metadata["sha256"] == hashlib.sha256(DATA).hexdigest()


async def test_a_dead_process_lease_expires(async_db: Any, sync_db: Any) -> None:
    storage = small(async_db, lease_seconds=1.0)
    upload_id = await begin(storage)
    files_id = ObjectId(upload_id[:24])
    # A process that took the lease and died: nobody releases it.
    sync_db["fs.uploads"].update_one(
        {"_id": files_id},
        {"$set": {"lease": {"owner": "dead", "until": later(timedelta(seconds=1))}}},
    )
    with pytest.raises(UploadLocked):
        await storage.append_upload(upload_id, 0, pieces(DATA[:10]))
    await asyncio.sleep(1.2)
    assert (await storage.append_upload(upload_id, 0, pieces(DATA[:10]))).offset == 10


async def test_a_long_append_keeps_its_lease(async_db: Any, other_db: Any) -> None:
    first, second = small(async_db, lease_seconds=0.9), small(other_db, lease_seconds=0.9)
    upload_id = await begin(first)

    async def slowly() -> AsyncIterator[bytes]:
        for i in range(0, len(DATA), 1000):  # ~2.5 s: the lease lasts 0.9 s
            yield DATA[i : i + 1000]
            await asyncio.sleep(0.25)

    appending = asyncio.create_task(first.append_upload(upload_id, 0, slowly()))
    refused = 0
    while not appending.done():
        await asyncio.sleep(0.2)
        with pytest.raises((UploadLocked, UploadConflict)):
            await second.append_upload(upload_id, 0, pieces(b"z"))
        refused += 1
    assert refused >= 10 and (await appending).offset == len(DATA)
    info = await first.complete_upload(upload_id)
    assert await read_all(first, info) == DATA


async def test_chunks_left_by_a_crash_are_overwritten(
    async_db: Any, other_db: Any, sync_db: Any
) -> None:
    storage = small(async_db)
    upload_id = await begin(storage)
    files_id = ObjectId(upload_id[:24])
    await storage.append_upload(upload_id, 0, pieces(DATA[:2500]))
    assert chunk_lengths(sync_db, files_id) == [(0, 1000), (1, 1000), (2, 500)]
    # A process took the lease (marking the record not clean), wrote its chunks and died
    # before the offset update: the tail chunk rewritten longer, two chunks past it.
    sync_db["fs.uploads"].update_one({"_id": files_id}, {"$set": {"clean": False}})
    junk = b"J" * 1000
    sync_db["fs.chunks"].update_one(
        {"files_id": files_id, "n": 2}, {"$set": {"data": DATA[2000:2500] + junk[:500]}}
    )
    sync_db["fs.chunks"].insert_many([{"files_id": files_id, "n": n, "data": junk} for n in (3, 4)])
    resumed = small(other_db)  # another process resumes: it knows no digests
    assert (await resumed.upload_state(upload_id)).offset == 2500
    await resumed.append_upload(upload_id, 2500, pieces(DATA[2500:3200]))
    assert chunk_lengths(sync_db, files_id) == [(0, 1000), (1, 1000), (2, 1000), (3, 200)]
    await resumed.append_upload(upload_id, 3200, pieces(DATA[3200:]))
    info = await resumed.complete_upload(upload_id)
    assert await read_all(resumed, info) == DATA
    assert info.md5 == hashlib.md5(DATA).hexdigest()


async def test_nothing_is_visible_before_completion(async_db: Any, sync_db: Any) -> None:
    storage = small(async_db)
    upload_id = await begin(storage)
    await storage.append_upload(upload_id, 0, pieces(DATA[:9000]))
    assert sync_db["fs.chunks"].count_documents({}) == 9
    assert sync_db["fs.files"].count_documents({}) == 0
    for key in ("clip.mp4", upload_id[:24]):
        with pytest.raises(FileNotFound):
            await storage.resolve(key)
    assert [info async for info in storage.list()] == []
    with pytest.raises(UploadConflict):  # not complete yet
        await storage.complete_upload(upload_id)
    assert sync_db["fs.files"].count_documents({}) == 0
    await storage.append_upload(upload_id, 9000, pieces(DATA[9000:]))
    info = await storage.complete_upload(upload_id)
    assert [found.id async for found in storage.list()] == [info.id]
    assert sync_db["fs.uploads"].count_documents({}) == 0
    with pytest.raises(UploadNotFound):
        await storage.upload_state(upload_id)


async def test_the_file_document_is_the_one_save_writes(async_db: Any, sync_db: Any) -> None:
    from gridfs import AsyncGridFSBucket

    storage = small(async_db)
    saved = await storage.save(
        "saved.mp4", pieces(DATA), content_type="video/mp4", metadata={"a": 1}
    )
    upload_id = await begin(storage)
    for start in range(0, len(DATA), 3333):  # appends that do not fall on chunk boundaries
        await storage.append_upload(upload_id, start, pieces(DATA[start : start + 3333]))
    info = await storage.complete_upload(upload_id, content_type="video/mp4", metadata={"a": 1})
    assert info.id == ObjectId(upload_id[:24])
    by_save = sync_db["fs.files"].find_one({"_id": saved.id})
    by_upload = sync_db["fs.files"].find_one({"_id": info.id})
    assert sorted(by_upload) == sorted(by_save)
    for field in ("length", "chunkSize", "md5", "metadata", "contentType"):
        assert by_upload[field] == by_save[field], field
    stream = await AsyncGridFSBucket(async_db).open_download_stream(info.id)
    assert await stream.read() == DATA  # a standard GridFS file


async def test_a_checksum_mismatch_restores_the_tail(async_db: Any, sync_db: Any) -> None:
    storage = small(async_db)
    upload_id = await begin(storage)
    files_id = ObjectId(upload_id[:24])
    await storage.append_upload(upload_id, 0, pieces(DATA[:2500]))
    wrong = Checksum("sha256", hashlib.sha256(b"other").digest())
    with pytest.raises(ChecksumMismatch):
        await storage.append_upload(upload_id, 2500, pieces(DATA[2500:6000], 700), checksum=wrong)
    assert (await storage.upload_state(upload_id)).offset == 2500
    assert chunk_lengths(sync_db, files_id) == [(0, 1000), (1, 1000), (2, 500)]
    chunk = sync_db["fs.chunks"].find_one({"files_id": files_id, "n": 2})
    assert chunk["data"] == DATA[2000:2500]
    right = Checksum("sha1", hashlib.sha1(DATA[2500:]).digest())
    await storage.append_upload(upload_id, 2500, pieces(DATA[2500:]), checksum=right)
    assert await read_all(storage, await storage.complete_upload(upload_id)) == DATA


async def test_a_client_gone_keeps_what_came(async_db: Any) -> None:
    storage = small(async_db)
    upload_id = await begin(storage)

    async def broken() -> AsyncIterator[bytes]:
        yield DATA[:3700]
        raise ConnectionResetError

    with pytest.raises(ConnectionResetError):
        await storage.append_upload(upload_id, 0, broken())
    assert (await storage.upload_state(upload_id)).offset == 3700
    await storage.append_upload(upload_id, 3700, pieces(DATA[3700:]))
    info = await storage.complete_upload(upload_id)
    assert await read_all(storage, info) == DATA
    assert info.md5 == hashlib.md5(DATA).hexdigest()  # from this process's running digests


async def test_terminate_leaves_nothing(async_db: Any, sync_db: Any) -> None:
    storage = small(async_db)
    upload_id = await begin(storage)
    await storage.append_upload(upload_id, 0, pieces(DATA[:5500]))
    with pytest.raises(UploadNotFound):  # the token is the authority: a wrong one is unknown
        await storage.terminate_upload(upload_id[:25] + "x" * (len(upload_id) - 25))
    await storage.terminate_upload(upload_id)
    assert sync_db["fs.chunks"].count_documents({}) == 0
    assert sync_db["fs.uploads"].count_documents({}) == 0
    for call in (storage.upload_state(upload_id), storage.terminate_upload(upload_id)):
        with pytest.raises(UploadNotFound):
            await call


async def test_wrong_or_malformed_ids_are_unknown(async_db: Any) -> None:
    storage = small(async_db)
    upload_id = await begin(storage)
    for bad in ("", "x", upload_id[:24], upload_id + "a", "z" * 24 + upload_id[24:]):
        with pytest.raises(UploadNotFound):
            await storage.upload_state(bad)
        with pytest.raises(UploadNotFound):
            await storage.append_upload(bad, 0, pieces(b"x"))
    assert (await storage.upload_state(upload_id)).offset == 0  # no lease left behind


async def test_the_sweep_keeps_unexpired_uploads(async_db: Any, sync_db: Any) -> None:
    storage = small(async_db)
    upload_id = await begin(storage)
    files_id = ObjectId(upload_id[:24])
    await storage.append_upload(upload_id, 0, pieces(DATA[:4500]))
    await asyncio.sleep(0.01)
    report = await sweep(storage, grace=0, repair=True)  # everything is old enough
    assert report.leftovers == []
    assert sync_db["fs.chunks"].count_documents({"files_id": files_id}) == 5
    assert await storage.expired_uploads(datetime.now(timezone.utc)) == []
    # Expired: the records' index names it, and the sweep terminates it, chunks and all.
    await storage.append_upload(upload_id, 4500, pieces(b""), expires_at=later(-SOON))
    expired = await storage.expired_uploads(datetime.now(timezone.utc))
    assert [state.id for state in expired] == [upload_id]
    assert "expiresAt_1" in sync_db["fs.uploads"].index_information()
    report = await sweep(storage, grace=DAY, repair=True)  # grace does not protect it
    assert [(item.kind, item.size, item.deleted) for item in report.leftovers] == [
        ("upload", 4500, True)
    ]
    assert sync_db["fs.chunks"].count_documents({}) == 0
    assert sync_db["fs.uploads"].count_documents({}) == 0


async def test_a_cancelled_append_keeps_what_came(async_db: Any, sync_db: Any) -> None:
    """A shutdown cancels the append: the bytes received are kept as when the client goes
    away, and the lease is free at once (not after it expires)."""
    storage = small(async_db)
    upload_id = await begin(storage)
    await storage.append_upload(upload_id, 0, pieces(DATA[:1500]))  # a tail to rewrite
    gate, started = asyncio.Event(), asyncio.Event()
    appending = asyncio.create_task(
        storage.append_upload(upload_id, 1500, held(DATA[1500:6700], gate, started))
    )
    await started.wait()
    appending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await appending
    state = await storage.upload_state(upload_id)
    assert state.offset == 1500 + 2600
    assert chunk_lengths(sync_db, ObjectId(upload_id[:24])) == [(n, 1000) for n in range(4)] + [
        (4, 100)
    ]
    await storage.append_upload(upload_id, state.offset, pieces(DATA[state.offset :]))
    info = await storage.complete_upload(upload_id)
    assert await read_all(storage, info) == DATA
    assert info.md5 == hashlib.md5(DATA).hexdigest()


async def test_memory_stays_bounded(async_db: Any, other_db: Any) -> None:
    """24 MiB in 4 MiB appends, two processes taking turns (so completion reads the chunks
    back for the digests): peak RSS grows by a few batches, not by the upload."""
    from tests.conftest import report_figure
    from tests.test_upload_memory import MIB, peak_rss, reset_peak

    storages = [GridFSStorage(async_db), GridFSStorage(other_db)]
    size = 24 * MIB
    upload_id = await begin(storages[0], size)
    block = os.urandom(64 * 1024)
    md5 = hashlib.md5(usedforsecurity=False)

    async def append(count: int) -> AsyncIterator[bytes]:
        for _ in range(count):
            md5.update(block)
            yield block

    reset_peak()
    before = peak_rss()
    for i, offset in enumerate(range(0, size, 4 * MIB)):
        await storages[i % 2].append_upload(upload_id, offset, append(4 * MIB // len(block)))
    info = await storages[0].complete_upload(upload_id)
    growth = peak_rss() - before
    assert info.length == size and info.md5 == md5.hexdigest()
    report_figure(
        f"gridfs: 24 MiB tus upload in 4 MiB appends grew peak RSS by {growth / MIB:.1f} MiB"
    )
    assert growth < 24 * MIB


async def test_terminated_during_an_append(async_db: Any, other_db: Any, sync_db: Any) -> None:
    """Terminating an upload an append holds is UploadLocked (the sweep leaves it for its
    next run); once that append's lease expired (a frozen process), termination goes ahead
    and the append, waking, finds it gone and removes what it wrote after."""
    first, second = small(async_db, lease_seconds=0.6), small(other_db, lease_seconds=0.6)
    upload_id = await begin(first)
    gate, started = asyncio.Event(), asyncio.Event()
    appending = asyncio.create_task(first.append_upload(upload_id, 0, held(DATA, gate, started)))
    await started.wait()
    with pytest.raises(UploadLocked):
        await second.terminate_upload(upload_id)
    await asyncio.sleep(0.8)
    await second.terminate_upload(upload_id)
    gate.set()  # the second half is written now, after the termination
    with pytest.raises(UploadNotFound):
        await appending
    assert sync_db["fs.chunks"].count_documents({}) == 0
    assert sync_db["fs.uploads"].count_documents({}) == 0


async def test_a_stalled_append_that_lost_its_lease_writes_nothing(
    async_db: Any, other_db: Any
) -> None:
    """An append stalled past its lease (a frozen process) is taken over; when it wakes, its
    next write finds the lease gone (UploadLocked) and the taker's bytes stay intact."""
    first, second = small(async_db, lease_seconds=0.6), small(other_db, lease_seconds=0.6)
    upload_id = await begin(first)
    gate, started = asyncio.Event(), asyncio.Event()
    other = bytes(reversed(DATA))
    stalled = asyncio.create_task(first.append_upload(upload_id, 0, held(other, gate, started)))
    await started.wait()
    await asyncio.sleep(0.8)
    assert (await second.append_upload(upload_id, 0, pieces(DATA))).complete
    gate.set()
    with pytest.raises(UploadLocked):
        await stalled
    info = await second.complete_upload(upload_id)
    assert await read_all(second, info) == DATA
    assert info.md5 == hashlib.md5(DATA).hexdigest()


async def test_a_process_killed_mid_append(
    async_db: Any, sync_db: Any, mongo_uri: str, db_name: str
) -> None:
    storage = small(async_db)
    upload_id = await begin(storage)
    files_id = ObjectId(upload_id[:24])
    await storage.append_upload(upload_id, 0, pieces(DATA[:2500]))
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, mongo_uri, db_name, upload_id, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        assert line.strip() == b"written"
        with pytest.raises(UploadLocked):  # the other process holds the lease
            await storage.append_upload(upload_id, 2500, pieces(DATA[2500:]))
    finally:
        child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(child.wait(), 30)
    # Written, never counted: the tail chunk rewritten with garbage after its first 500
    # bytes, three chunks past it.
    assert chunk_lengths(sync_db, files_id) == [(n, 1000) for n in range(6)]
    assert (await storage.upload_state(upload_id)).offset == 2500
    await asyncio.sleep(2.1)  # the lease dies with the process, after its time
    resumed = small(async_db)  # a fresh process: no digests
    await resumed.append_upload(upload_id, 2500, pieces(DATA[2500:7000]))
    assert chunk_lengths(sync_db, files_id) == [(n, 1000) for n in range(7)]
    await resumed.append_upload(upload_id, 7000, pieces(DATA[7000:]))
    info = await resumed.complete_upload(upload_id)
    assert await read_all(resumed, info) == DATA
    assert info.md5 == hashlib.md5(DATA).hexdigest()


async def test_the_sweep_leaves_an_expired_upload_an_append_holds(
    async_db: Any, sync_db: Any
) -> None:
    storage = small(async_db)
    state = await storage.begin_upload(
        "late.bin", length=None, owner="", metadata={}, expires_at=later(-SOON)
    )
    gate, started = asyncio.Event(), asyncio.Event()
    appending = asyncio.create_task(storage.append_upload(state.id, 0, held(DATA, gate, started)))
    await started.wait()
    files_id = ObjectId(state.id[:24])
    for _ in range(300):  # until the first half's chunks are stored (the sweep could take them)
        if len(chunk_lengths(sync_db, files_id)) >= 4:
            break
        await asyncio.sleep(0.05)
    stored = chunk_lengths(sync_db, files_id)
    assert len(stored) >= 4, stored
    # The sweep judges chunks from ids older than its horizon, whole seconds (as ObjectIds
    # carry time): sweep once the upload's second has passed, so it does judge these.
    await asyncio.sleep(max(0.0, files_id.generation_time.timestamp() + 1.1 - time.time()))
    report = await sweep(storage, grace=0, repair=True)
    assert [(item.kind, item.deleted) for item in report.leftovers] == [("upload", False)]
    assert chunk_lengths(sync_db, files_id) == stored  # the append's chunks are kept
    gate.set()
    assert (await appending).offset == len(DATA)
    report = await sweep(storage, grace=0, repair=True)
    assert [(item.kind, item.deleted) for item in report.leftovers] == [("upload", True)]
    assert sync_db["fs.chunks"].count_documents({}) == 0
    assert sync_db["fs.uploads"].count_documents({}) == 0


async def test_a_motor_database_takes_resumable_uploads(mongo_uri: str, db_name: str) -> None:
    motor_asyncio = pytest.importorskip("motor.motor_asyncio")
    client = motor_asyncio.AsyncIOMotorClient(mongo_uri)
    try:
        storage = small(client[db_name])
        upload_id = await begin(storage)
        await storage.append_upload(upload_id, 0, pieces(DATA[:4321]))
        await storage.append_upload(upload_id, 4321, pieces(DATA[4321:]))
        storage.running_digests.forget(upload_id)  # completion reads the chunks back
        info = await storage.complete_upload(upload_id)
        assert await read_all(storage, info) == DATA
        assert info.md5 == hashlib.md5(DATA).hexdigest()
        assert await storage.expired_uploads(later()) == []
    finally:
        client.close()


async def test_an_append_cancelled_while_taking_the_lease_gives_it_back(
    mongo_uri: str, db_name: str, async_db: Any
) -> None:
    sent = asyncio.Event()

    class Watch(monitoring.CommandListener):
        def started(self, event: monitoring.CommandStartedEvent) -> None:
            if event.command_name == "findAndModify":
                sent.set()

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_uri, event_listeners=[Watch()]
    )
    try:
        storage = small(client[db_name])
        upload_id = await begin(storage)
        appending = asyncio.create_task(storage.append_upload(upload_id, 0, pieces(DATA)))
        await sent.wait()
        appending.cancel()  # the lease is being taken: the command is on its way
        with pytest.raises(asyncio.CancelledError):
            await appending
        state = await small(async_db).append_upload(upload_id, 0, pieces(DATA))  # not locked
        assert state.complete
    finally:
        await client.close()
