"""Resumable uploads into S3 (gridserve.storage.s3uploads), against s3proxy on loopback: what
the contract suite cannot see (parts, tails, staging, the bucket's raw contents)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from gridserve.storage import CorruptFile, FileNotFound
from gridserve.storage.resumable import (
    Checksum,
    ChecksumMismatch,
    UploadConflict,
    UploadLocked,
    UploadNotFound,
)
from gridserve.storage.s3 import S3Storage
from gridserve.storage.s3uploadstate import HostLocks
from tests.conftest import report_figure
from tests.s3server import S3Proxy
from tests.test_storage_contract import read_all
from tests.test_storage_s3 import leftovers
from tests.test_upload_memory import peak_rss, reset_peak

MIB = 1024 * 1024
PART = 5 * MIB
LATER = datetime.now(timezone.utc) + timedelta(days=1)


async def stream(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def storage_of(server: S3Proxy, bucket: str, locks: Path, **options: Any) -> S3Storage:
    return S3Storage(
        bucket,
        "media",
        part_size=PART,
        upload_lock_dir=str(locks),
        **options,
        **server.client_options(),
    )


def raw_client(server: S3Proxy) -> Any:
    """A client of the test server as S3Storage makes it (no checksums s3proxy refuses)."""
    config = AioConfig(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"},
    )
    return get_session().create_client("s3", config=config, **server.client_options())


async def raw(server: S3Proxy, bucket: str) -> tuple[dict[str, int], list[str]]:
    """Every object (key -> size) and every multipart upload's key in the bucket."""
    async with get_session().create_client("s3", **server.client_options()) as s3:
        listing = await s3.list_objects_v2(Bucket=bucket)
        uploads = await s3.list_multipart_uploads(Bucket=bucket)
    objects = {o["Key"]: int(o["Size"]) for o in listing.get("Contents", [])}
    return objects, [u["Key"] for u in uploads.get("Uploads") or []]


def ours(objects: dict[str, int]) -> dict[str, int]:
    """The objects under the storage's prefix (s3proxy keeps multipart parts as objects of
    its own, `.mpus-*` and the upload id, at the bucket's top)."""
    return {k: v for k, v in objects.items() if k.startswith("media/") and not k.endswith("/")}


async def test_uneven_appends_across_parts_complete_with_digests(
    s3_server: S3Proxy, s3_bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(12 * MIB + 777)
    cuts = [0, 3 * MIB + 1, 3 * MIB + 100_001, 7 * MIB + 5, 11 * MIB, len(data)]
    storage = storage_of(s3_server, s3_bucket, tmp_path)
    try:
        state = await storage.begin_upload(
            "clips/a.webm", length=len(data), owner="o", metadata={"k": "v"}, expires_at=LATER
        )
        for start, stop in itertools.pairwise(cuts):
            state = await storage.append_upload(state.id, start, stream(data[start:stop]))
            assert state.offset == stop
            assert state.head == data[: min(stop, 8192)]
            objects, multipart = await raw(s3_server, s3_bucket)
            # Parts of PART bytes went to the multipart upload; the rest is the tail object.
            tails = {k: v for k, v in ours(objects).items() if "/tail-" in k}
            assert list(tails.values()) == ([stop % PART] if stop % PART else [])
            assert multipart == (
                [] if stop < PART else [f"media/.gridserve/upload-data/{state.id}/staging"]
            )
            # Nothing of it is a file yet: not listed, not resolvable, not its private objects.
            assert [i async for i in storage.list()] == []
            for key in ["clips/a.webm", *(k.removeprefix("media/") for k in ours(objects))]:
                with pytest.raises(FileNotFound):
                    await storage.resolve(key)
        info = await storage.complete_upload(
            state.id, content_type="video/webm", metadata={"title": "a"}
        )
        assert info.md5 == hashlib.md5(data).hexdigest()
        assert info.metadata["sha256"] == hashlib.sha256(data).hexdigest()
        assert info.metadata["title"] == "a"
        assert info.content_type == "video/webm"
        assert info.length == len(data)
        again = await storage.resolve("clips/a.webm")
        assert again.etag == info.etag
        assert await read_all(storage, again) == data
        assert await read_all(storage, again, PART - 3, PART + 3) == data[PART - 3 : PART + 3]
        with pytest.raises(UploadNotFound):
            await storage.upload_state(state.id)
        objects, multipart = await raw(s3_server, s3_bucket)
        assert ours(objects) == {"media/clips/a.webm": len(data)}
        assert multipart == []
    finally:
        await storage.close()


async def test_fresh_instance_resumes_and_reads_the_digests_back(
    s3_server: S3Proxy, s3_bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(6 * MIB + 5)
    first = storage_of(s3_server, s3_bucket, tmp_path / "host-a")
    try:
        state = await first.begin_upload(
            "b.bin", length=None, owner="", metadata={}, expires_at=LATER
        )
        await first.append_upload(state.id, 0, stream(data[: 4 * MIB]))
    finally:
        await first.close()
    second = storage_of(s3_server, s3_bucket, tmp_path / "host-b")
    try:
        state = await second.upload_state(state.id)
        assert (state.offset, state.length) == (4 * MIB, None)
        sha1 = hashlib.sha1(data[4 * MIB :]).digest()
        state = await second.append_upload(
            state.id,
            4 * MIB,
            stream(data[4 * MIB :]),
            length=len(data),
            checksum=Checksum("sha1", sha1),
        )
        assert state.complete
        info = await second.complete_upload(state.id)
        assert info.md5 == hashlib.md5(data).hexdigest()  # read back: this process saw half
        assert info.metadata["sha256"] == hashlib.sha256(data).hexdigest()
        assert await read_all(second, info) == data
    finally:
        await second.close()
    assert await leftovers(s3_server, s3_bucket) == (["media/b.bin"], [])


async def test_an_upload_smaller_than_a_part_never_starts_a_multipart_upload(
    s3_server: S3Proxy, s3_bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(300_000)
    storage = storage_of(s3_server, s3_bucket, tmp_path)
    try:
        state = await storage.begin_upload(
            "small.txt", length=len(data), owner="", metadata={}, expires_at=LATER
        )
        for start in range(0, len(data), 100_000):
            await storage.append_upload(state.id, start, stream(data[start : start + 100_000]))
            objects, multipart = await raw(s3_server, s3_bucket)
            assert multipart == []
            tails = [size for key, size in ours(objects).items() if "/tail-" in key]
            assert tails == [start + 100_000]  # one tail, all of it so far
        info = await storage.complete_upload(state.id, content_type="text/plain")
        assert info.md5 == hashlib.md5(data).hexdigest()
        assert await read_all(storage, info) == data
        empty = await storage.begin_upload(
            "empty", length=0, owner="", metadata={}, expires_at=LATER
        )
        info = await storage.complete_upload(empty.id)
        assert info.length == 0 and info.md5 == hashlib.md5(b"").hexdigest()
    finally:
        await storage.close()
    assert await leftovers(s3_server, s3_bucket) == (["media/empty", "media/small.txt"], [])


async def test_a_checksum_mismatch_discards_parts_and_tail(
    s3_server: S3Proxy, s3_bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(11 * MIB)
    storage = storage_of(s3_server, s3_bucket, tmp_path)
    wrong = Checksum("sha256", hashlib.sha256(b"something else").digest())
    try:
        state = await storage.begin_upload(
            "c.bin", length=len(data), owner="", metadata={}, expires_at=LATER
        )
        # The first append would start the multipart upload: it is aborted with its bytes.
        with pytest.raises(ChecksumMismatch):
            await storage.append_upload(state.id, 0, stream(data[: 6 * MIB]), checksum=wrong)
        assert (await storage.upload_state(state.id)).offset == 0
        objects, multipart = await raw(s3_server, s3_bucket)
        assert multipart == []
        assert [k for k in ours(objects) if "upload-data" in k] == []
        await storage.append_upload(state.id, 0, stream(data[: 2 * MIB]))
        before = ours((await raw(s3_server, s3_bucket))[0])
        # One with a tail and the multipart upload under way: the offset and tail stay.
        with pytest.raises(ChecksumMismatch):
            await storage.append_upload(
                state.id, 2 * MIB, stream(data[2 * MIB : 9 * MIB]), checksum=wrong
            )
        assert (await storage.upload_state(state.id)).offset == 2 * MIB
        assert ours((await raw(s3_server, s3_bucket))[0]) == before
        good = Checksum("sha256", hashlib.sha256(data[2 * MIB :]).digest())
        await storage.append_upload(state.id, 2 * MIB, stream(data[2 * MIB :]), checksum=good)
        info = await storage.complete_upload(state.id)
        assert await read_all(storage, info) == data
        assert info.md5 == hashlib.md5(data).hexdigest()
    finally:
        await storage.close()
    assert await leftovers(s3_server, s3_bucket) == (["media/c.bin"], [])


async def test_a_client_gone_mid_append_keeps_what_arrived(
    s3_server: S3Proxy, s3_bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(8 * MIB)
    storage = storage_of(s3_server, s3_bucket, tmp_path)

    async def broken() -> AsyncIterator[bytes]:
        yield data[: 3 * MIB]
        yield data[3 * MIB : 6 * MIB + 10]
        raise ConnectionResetError("client went away")

    try:
        state = await storage.begin_upload(
            "d.bin", length=len(data), owner="", metadata={}, expires_at=LATER
        )
        with pytest.raises(ConnectionResetError):
            await storage.append_upload(state.id, 0, broken())
        state = await storage.upload_state(state.id)
        assert state.offset == 6 * MIB + 10
        await storage.append_upload(state.id, state.offset, stream(data[state.offset :]))
        info = await storage.complete_upload(state.id)
        assert await read_all(storage, info) == data
    finally:
        await storage.close()


async def test_a_cancelled_append_stores_what_it_received(
    s3_server: S3Proxy, s3_bucket: str, tmp_path: Path
) -> None:
    """A shutdown cancels the request mid-append: the part and tail it received are kept."""
    data = os.urandom(6 * MIB)
    storage = storage_of(s3_server, s3_bucket, tmp_path)
    received = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield data[: 5 * MIB + 3]
        received.set()
        await asyncio.Event().wait()  # the client stalls until the server shuts down
        yield data

    try:
        state = await storage.begin_upload(
            "p.bin", length=len(data), owner="", metadata={}, expires_at=LATER
        )
        task = asyncio.ensure_future(storage.append_upload(state.id, 0, stalls()))
        await received.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await storage.upload_state(state.id)).offset == 5 * MIB + 3
        await storage.append_upload(state.id, 5 * MIB + 3, stream(data[5 * MIB + 3 :]))
        info = await storage.complete_upload(state.id)
        assert await read_all(storage, info) == data
    finally:
        await storage.close()
    assert await leftovers(s3_server, s3_bucket) == (["media/p.bin"], [])


async def test_conflicts_change_nothing(s3_server: S3Proxy, s3_bucket: str, tmp_path: Path) -> None:
    storage = storage_of(s3_server, s3_bucket, tmp_path)
    try:
        state = await storage.begin_upload(
            "e.bin", length=10, owner="", metadata={}, expires_at=LATER
        )
        with pytest.raises(UploadConflict):
            await storage.append_upload(state.id, 3, stream(b"abc"))
        with pytest.raises(UploadConflict):
            await storage.append_upload(state.id, 0, stream(b"abc"), length=11)
        with pytest.raises(UploadConflict):
            await storage.complete_upload(state.id)
        with pytest.raises(UploadConflict):  # past the length: nothing past it is stored
            await storage.append_upload(state.id, 0, stream(b"0123456789abc"))
        assert (await storage.upload_state(state.id)).offset <= 10
        for bad in ["../x", "a" * 65, "", "x/y"]:
            with pytest.raises(UploadNotFound):
                await storage.upload_state(bad)
            with pytest.raises(UploadNotFound):
                await storage.append_upload(bad, 0, stream(b"a"))
        await storage.terminate_upload(state.id)
    finally:
        await storage.close()
    assert await leftovers(s3_server, s3_bucket) == ([], [])


async def test_one_append_at_a_time_in_the_process_and_on_the_host(
    s3_server: S3Proxy, s3_bucket: str, tmp_path: Path
) -> None:
    storage = storage_of(s3_server, s3_bucket, tmp_path)
    other = storage_of(s3_server, s3_bucket, tmp_path)  # another process's instance: flock
    release = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"a" * 1000
        await release.wait()
        yield b"b" * 1000

    try:
        state = await storage.begin_upload(
            "f.bin", length=None, owner="", metadata={}, expires_at=LATER
        )
        running = asyncio.ensure_future(storage.append_upload(state.id, 0, slow()))
        await asyncio.sleep(0.2)
        for attempt in (storage, other):
            with pytest.raises(UploadLocked):
                await attempt.append_upload(state.id, 0, stream(b"x"))
            with pytest.raises(UploadLocked):
                await attempt.terminate_upload(state.id)
        release.set()
        assert (await running).offset == 2000
        assert (await other.append_upload(state.id, 2000, stream(b"c"))).offset == 2001
        assert not any(tmp_path.glob("*.lock"))  # noqa: ASYNC240 - lock files go with their lock
        await other.terminate_upload(state.id)
    finally:
        await storage.close()
        await other.close()
    assert await leftovers(s3_server, s3_bucket) == ([], [])


async def test_terminate_and_expiry_leave_nothing(
    s3_server: S3Proxy, s3_bucket: str, tmp_path: Path
) -> None:
    storage = storage_of(s3_server, s3_bucket, tmp_path)
    now = datetime.now(timezone.utc)
    try:
        old = await storage.begin_upload(
            "g.bin", length=None, owner="", metadata={}, expires_at=now - timedelta(minutes=1)
        )
        await storage.append_upload(old.id, 0, stream(os.urandom(7 * MIB)))  # a part + a tail
        live = await storage.begin_upload(
            "h.bin", length=None, owner="", metadata={}, expires_at=LATER
        )
        await storage.append_upload(live.id, 0, stream(b"x" * 10))
        # An append that extends the expiry keeps it from the sweep.
        assert [s.id for s in await storage.expired_uploads(now)] == [old.id]
        await storage.append_upload(old.id, 7 * MIB, stream(b"y"), expires_at=LATER)
        assert await storage.expired_uploads(now) == []
        assert len(await storage.expired_uploads(LATER + timedelta(seconds=1))) == 2
        assert await storage.expired_uploads(LATER + timedelta(seconds=1), limit=1) != []
        for state in await storage.expired_uploads(LATER + timedelta(seconds=1)):
            await storage.terminate_upload(state.id)
        with pytest.raises(UploadNotFound):
            await storage.terminate_upload(old.id)
    finally:
        await storage.close()
    assert await leftovers(s3_server, s3_bucket) == ([], [])


async def test_interrupted_states_are_finished_or_removed(
    s3_server: S3Proxy, s3_bucket: str, tmp_path: Path
) -> None:
    """What a crash leaves: a completion that stopped after staging resumes; a multipart
    upload created but never recorded, a stray tail, an unreadable state: terminate removes
    them all."""
    data = os.urandom(6 * MIB)
    storage = storage_of(s3_server, s3_bucket, tmp_path)
    try:
        state = await storage.begin_upload(
            "i.bin", length=len(data), owner="", metadata={}, expires_at=LATER
        )
        await storage.append_upload(state.id, 0, stream(data))
        await storage._stage(await storage._load(state.id))  # completion stopped here
        storage.running_digests.forget((await storage._load(state.id)).digests_key)
        info = await storage.complete_upload(state.id)
        assert info.md5 == hashlib.md5(data).hexdigest()

        # A completion that copied the file and stopped after deleting the staged object.
        again = await storage.begin_upload(
            "i2.bin", length=len(data), owner="", metadata={}, expires_at=LATER
        )
        await storage.append_upload(again.id, 0, stream(data))
        await storage._stage(await storage._load(again.id))
        async with raw_client(s3_server) as s3:
            await s3.delete_object(
                Bucket=s3_bucket, Key=f"media/.gridserve/upload-data/{again.id}/staging"
            )
        storage.running_digests.forget((await storage._load(again.id)).digests_key)
        with pytest.raises(UploadNotFound):
            await storage.complete_upload(again.id)
        with pytest.raises(UploadNotFound):
            await storage.upload_state(again.id)

        broken = await storage.begin_upload(
            "j.bin", length=None, owner="", metadata={}, expires_at=LATER
        )
        async with raw_client(s3_server) as s3:
            base = f"media/.gridserve/upload-data/{broken.id}/"
            await s3.create_multipart_upload(Bucket=s3_bucket, Key=base + "staging")
            await s3.put_object(Bucket=s3_bucket, Key=base + "tail-99", Body=b"stray")
            await s3.put_object(
                Bucket=s3_bucket, Key=f"media/.gridserve/uploads/{broken.id}.json", Body=b"{"
            )
        expired = await storage.expired_uploads(datetime.now(timezone.utc))
        assert [s.id for s in expired] == [broken.id]  # unreadable: expired
        await storage.terminate_upload(broken.id)
    finally:
        await storage.close()
    assert await leftovers(s3_server, s3_bucket) == (["media/i.bin"], [])


async def test_above_the_copy_limit_completion_copies_in_parts(
    s3_server: S3Proxy, s3_bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(13 * MIB)
    storage = storage_of(s3_server, s3_bucket, tmp_path)
    storage.copy_limit = 6 * MIB  # as a 5 GiB+ upload on S3: UploadPartCopy
    try:
        state = await storage.begin_upload(
            "k.bin", length=len(data), owner="", metadata={}, expires_at=LATER
        )
        await storage.append_upload(state.id, 0, stream(data))
        info = await storage.complete_upload(state.id, content_type="video/mp4", metadata={"x": 1})
        assert (info.md5, info.content_type, info.metadata["x"]) == (
            hashlib.md5(data).hexdigest(),
            "video/mp4",
            1,
        )
        assert await read_all(storage, info) == data
    finally:
        await storage.close()
    assert await leftovers(s3_server, s3_bucket) == (["media/k.bin"], [])


async def test_the_state_is_a_private_json_record(
    s3_server: S3Proxy, s3_bucket: str, tmp_path: Path
) -> None:
    storage = storage_of(s3_server, s3_bucket, tmp_path)
    try:
        state = await storage.begin_upload(
            "l.bin", length=5, owner="me", metadata={"filename": "l.bin"}, expires_at=LATER
        )
        async with raw_client(s3_server) as s3:
            got = await s3.get_object(
                Bucket=s3_bucket, Key=f"media/.gridserve/uploads/{state.id}.json"
            )
            record = json.loads(await got["Body"].read())
        assert record["owner"] == "me" and record["offset"] == 0 and record["length"] == 5
        assert len(state.id) >= 22 and state.id.replace("-", "").replace("_", "").isalnum()
        with pytest.raises(FileNotFound):
            await storage.resolve(f".gridserve/uploads/{state.id}.json")
        await storage.terminate_upload(state.id)
    finally:
        await storage.close()


async def test_two_hosts_appending_at_once_never_make_a_file_of_mixed_bytes(
    s3_server: S3Proxy, s3_bucket: str, tmp_path: Path
) -> None:
    """No lock spans hosts (README): two hosts may both append at one offset. Whatever the
    order, the file is one host's bytes with their digests, or completion refuses."""
    host_a = storage_of(s3_server, s3_bucket, tmp_path / "a")
    host_b = storage_of(s3_server, s3_bucket, tmp_path / "b")
    go_on, reached = asyncio.Event(), asyncio.Event()

    async def held(data: bytes, split: int) -> AsyncIterator[bytes]:
        yield data[:split]
        reached.set()  # asked for more: what the first piece filled was sent
        await go_on.wait()
        yield data[split:]

    try:
        # Tails only: B starts, A appends and commits, B commits last. A completes: the digests
        # it kept are of its own bytes, not of the state's.
        a, b = b"a" * 1000, b"b" * 1000
        state = await host_a.begin_upload(
            "m.bin", length=1000, owner="", metadata={}, expires_at=LATER
        )
        second = asyncio.ensure_future(host_b.append_upload(state.id, 0, held(b, 10)))
        await reached.wait()
        await host_a.append_upload(state.id, 0, stream(a))
        go_on.set()
        await second
        info = await host_a.complete_upload(state.id)
        assert await read_all(host_a, info) == b
        assert info.md5 == hashlib.md5(b).hexdigest()

        # From offset 0 each starts a multipart upload of its own: the last commit's wins whole,
        # the other's is aborted at completion.
        async def race(name: str, start: bytes, a: bytes, b: bytes) -> str:
            go_on.clear()
            reached.clear()
            state = await host_a.begin_upload(
                name, length=len(start + a), owner="", metadata={}, expires_at=LATER
            )
            if start:
                await host_a.append_upload(state.id, 0, stream(start))
            first = asyncio.ensure_future(host_a.append_upload(state.id, len(start), held(a, PART)))
            await reached.wait()  # A sent a part
            await host_b.append_upload(state.id, len(start), stream(b))
            go_on.set()
            await first  # A commits last, naming its part
            return state.id

        a, b = os.urandom(PART + 10), os.urandom(PART + 10)
        info = await host_b.complete_upload(await race("n.bin", b"", a, b))
        assert await read_all(host_b, info) == a
        assert info.md5 == hashlib.md5(a).hexdigest()
        # With the multipart upload under way, B overwrites A's part: completion refuses.
        upload_id = await race("o.bin", os.urandom(PART), a, b)
        with pytest.raises(CorruptFile):
            await host_b.complete_upload(upload_id)
        with pytest.raises(FileNotFound):
            await host_b.resolve("o.bin")
        await host_b.terminate_upload(upload_id)
    finally:
        await host_a.close()
        await host_b.close()
    assert await leftovers(s3_server, s3_bucket) == (["media/m.bin", "media/n.bin"], [])


def test_the_host_lock_holds_between_processes_and_dies_with_its_holder(tmp_path: Path) -> None:
    """HostLocks alone (no server): another process holding an upload's lock makes it
    UploadLocked here; killed, it releases it (the kernel drops the flock)."""
    import subprocess
    import sys

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from gridserve.storage.s3uploadstate import HostLocks\n"
            f"with HostLocks(Path({str(tmp_path)!r})).hold('up'):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        locks = HostLocks(tmp_path)
        with pytest.raises(UploadLocked), locks.hold("up"):
            pass
        with locks.hold("other"):  # one lock per upload
            pass
    finally:
        holder.kill()
        holder.wait()
    # And in one process, between tasks:
    with locks.hold("up"), pytest.raises(UploadLocked), locks.hold("up"):
        pass
    assert list(tmp_path.iterdir()) == []


async def test_through_the_chunk_cache_a_replaced_file_is_never_served_stale(
    s3_server: S3Proxy, s3_bucket: str, tmp_path: Path
) -> None:
    """The daemon's default: a chunk cache in front. An upload that replaces a file read
    before gets new bytes read back (the ETag, the cache's key, is new)."""
    from gridserve.storage.cache import CachedStorage

    storage = CachedStorage(storage_of(s3_server, s3_bucket, tmp_path), 4 * MIB)
    try:
        for content in (os.urandom(PART + 1), os.urandom(PART + 1)):
            state = await storage.begin_upload(
                "q.bin", length=len(content), owner="", metadata={}, expires_at=LATER
            )
            await storage.append_upload(state.id, 0, stream(content))
            await storage.complete_upload(state.id)
            info = await storage.resolve("q.bin")
            assert await read_all(storage, info, 0, 300_000) == content[:300_000]
            assert info.md5 == hashlib.md5(content).hexdigest()
    finally:
        await storage.close()


async def test_memory_of_a_large_upload_in_uneven_appends(
    s3_server: S3Proxy, s3_bucket: str, tmp_path: Path
) -> None:
    """Peak RSS grows by a few parts whatever the size: one part in memory at a time, the tail
    under a part, and a completion without running digests reads back a block at a time."""
    size = 96 * MIB
    block = os.urandom(MIB)
    writer = S3Storage(
        s3_bucket, "media", upload_lock_dir=str(tmp_path), **s3_server.client_options()
    )
    fresh = S3Storage(
        s3_bucket, "media", upload_lock_dir=str(tmp_path), **s3_server.client_options()
    )
    try:
        state = await writer.begin_upload(
            "big.bin", length=size, owner="", metadata={}, expires_at=LATER
        )

        async def blocks(count: int) -> AsyncIterator[bytes]:
            for _ in range(count):
                yield block

        await writer.upload_state(state.id)  # warm up the client and the code paths
        await fresh.upload_state(state.id)
        reset_peak()
        before = peak_rss()
        while state.offset < size:  # 9 MiB appends: parts of 8 MiB and a moving tail
            count = min(9, (size - state.offset) // MIB)
            state = await writer.append_upload(state.id, state.offset, blocks(count))
        info = await fresh.complete_upload(state.id)
        growth = peak_rss() - before
        expected = hashlib.sha256(block * (size // MIB)).hexdigest()
        assert info.metadata["sha256"] == expected
        report_figure(
            f"s3: 96 MiB resumable upload (9 MiB appends, 8 MiB parts, completion re-reading) "
            f"grew peak RSS by {growth / MIB:.1f} MiB"
        )
        assert growth < 5 * writer.part_size
    finally:
        await writer.close()
        await fresh.close()
