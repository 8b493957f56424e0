"""The resumable-upload contract (gridserve/storage/base.py, "Resumable uploads"), run against
every backend: GridFS on the test database, local disk, S3 on s3proxy.

A backend whose ``begin_upload`` raises NotImplementedError is skipped (it takes none yet).
"A fresh instance" is a new storage object on the same database / directory / bucket: what
another process or host sees. Each test also checks the backend's raw leftovers (chunks and
upload records, files under ``.gridserve/``, multipart uploads and objects), not only what
the interface says.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from gridserve.storage import FileInfo, FileNotFound, InvalidKey, Storage
from gridserve.storage.cache import CachedStorage
from gridserve.storage.fallback import FallbackStorage
from gridserve.storage.local import LocalStorage
from gridserve.storage.resumable import (
    HEAD_BYTES,
    Checksum,
    ChecksumMismatch,
    UploadConflict,
    UploadLocked,
    UploadNotFound,
    UploadState,
)
from tests.conftest import BACKENDS
from tests.uploadleftovers import leftovers_checker, leftovers_of

pytestmark = pytest.mark.parametrize("backend", BACKENDS, indirect=True)

MIB = 1024 * 1024
GRIDFS_CHUNK = 255 * 1024
DATA = os.urandom(700_000)  # several GridFS chunks, not a multiple of any size in play


def later(hours: float = 1) -> datetime:
    return datetime.now(timezone.utc) + timedelta(hours=hours)


async def pieces(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
        await asyncio.sleep(0)


async def read_all(storage: Storage, info: FileInfo) -> bytes:
    return b"".join([chunk async for chunk in storage.read(info)])


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
async def storage(make_storage: Callable[[], Storage]) -> AsyncIterator[Storage]:
    instance = make_storage()
    yield instance
    await instance.close()


@pytest.fixture
async def fresh(make_storage: Callable[[], Storage]) -> AsyncIterator[Callable[[], Storage]]:
    """fresh() -> another storage object on the same backend (closed at the end)."""
    made: list[Storage] = []

    def make() -> Storage:
        made.append(make_storage())
        return made[-1]

    yield make
    for instance in made:
        await instance.close()


async def begin(
    storage: Storage,
    name: str = "show/ep1.webm",
    *,
    length: int | None = len(DATA),
    owner: str = "owner-1",
    metadata: Mapping[str, str] | None = None,
    expires_at: datetime | None = None,
) -> UploadState:
    """begin_upload, skipping the test on a storage that takes no resumable uploads."""
    try:
        return await storage.begin_upload(
            name,
            length=length,
            owner=owner,
            metadata=dict(metadata or {"filename": name}),
            expires_at=expires_at or later(),
        )
    except NotImplementedError:
        pytest.skip(f"{type(storage).__name__} takes no resumable uploads yet")


async def append(storage: Storage, state: UploadState, data: bytes, **options: Any) -> UploadState:
    return await storage.append_upload(state.id, state.offset, pieces(data), **options)


@pytest.fixture
def raw_leftovers(
    backend: str, request: pytest.FixtureRequest, local_root: Path
) -> Callable[..., list[str]]:
    return leftovers_checker(backend, request, local_root)


async def invisible(storage: Storage, state: UploadState) -> None:
    """Nothing of the upload ``state`` shows as a file: not by name, id or listing."""
    for key in (state.name, state.id, state.id[:24]):
        with pytest.raises((FileNotFound, InvalidKey)):
            await storage.resolve(key)
    assert [info.filename async for info in storage.list()] == []


# -- the round trip ------------------------------------------------------------------------


async def test_begin_state_append_complete(
    storage: Storage, fresh: Callable[[], Storage], raw_leftovers: Callable[..., list[str]]
) -> None:
    state = await begin(storage, metadata={"filename": "ep1.webm", "filetype": "video/webm"})
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", state.id), state.id
    assert (state.name, state.length, state.offset, state.owner) == (
        "show/ep1.webm",
        len(DATA),
        0,
        "owner-1",
    )
    assert state.metadata == {"filename": "ep1.webm", "filetype": "video/webm"}
    assert not state.complete and state.head == b""
    assert state.created_at.tzinfo is not None and state.expires_at > state.created_at
    other = await begin(storage)
    assert other.id != state.id  # each upload its own id, even for the same name

    state = await append(storage, state, DATA[:300_001])
    assert (state.offset, state.head) == (300_001, DATA[:HEAD_BYTES])
    stored = await storage.upload_state(state.id)
    assert (stored.id, stored.name, stored.length, stored.offset) == (
        state.id,
        "show/ep1.webm",
        len(DATA),
        300_001,
    )
    assert stored.head == DATA[:HEAD_BYTES] and stored.owner == "owner-1"
    await invisible(storage, state)

    state = await append(storage, state, DATA[300_001:])
    assert state.complete and state.offset == len(DATA)
    await invisible(storage, state)  # complete is not completed: still nothing to see

    info = await storage.complete_upload(
        state.id, content_type="video/webm", metadata={"owner": "ann"}
    )
    assert (info.filename, info.length, info.content_type) == (
        "show/ep1.webm",
        len(DATA),
        "video/webm",
    )
    assert info.md5 == md5(DATA)
    assert info.metadata["sha256"] == sha256(DATA)
    assert info.metadata["owner"] == "ann"
    assert await read_all(storage, info) == DATA
    again = await fresh().resolve("show/ep1.webm")
    assert (again.id, again.etag, again.md5) == (info.id, info.etag, info.md5)
    assert [i.filename async for i in storage.list()] == ["show/ep1.webm"]

    with pytest.raises(UploadNotFound):
        await storage.upload_state(state.id)  # completed: forgotten
    with pytest.raises(UploadNotFound):
        await storage.complete_upload(state.id)
    await storage.terminate_upload(other.id)
    assert await leftovers_of(raw_leftovers, "show/ep1.webm") == []


async def test_completion_replaces_or_adds_a_revision(storage: Storage) -> None:
    old = await storage.save("song.ogg", pieces(b"the old song"))
    state = await begin(storage, "song.ogg", length=len(DATA))
    state = await append(storage, state, DATA)
    seen = await storage.resolve("song.ogg")  # until completion, the old file is the file
    assert (seen.id, await read_all(storage, seen)) == (old.id, b"the old song")
    info = await storage.complete_upload(state.id)
    assert await read_all(storage, await storage.resolve("song.ogg")) == DATA
    revisions = await storage.revisions("song.ogg")
    if storage.keeps_revisions:  # GridFS: a new revision, the old one kept
        assert [r.id for r in revisions] == [old.id, info.id]
        assert await read_all(storage, revisions[0]) == b"the old song"
    else:  # local, S3: replaced
        assert [r.md5 for r in revisions] == [md5(DATA)]


async def test_zero_length_upload(storage: Storage) -> None:
    state = await begin(storage, "empty.bin", length=0)
    assert state.complete
    info = await storage.complete_upload(state.id)
    assert (info.length, info.md5, info.metadata["sha256"]) == (0, md5(b""), sha256(b""))
    assert await read_all(storage, await storage.resolve("empty.bin")) == b""


# -- appends -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sizes",
    [
        # byte by byte at first, then across GridFS chunk edges by one byte either side
        [1, 1, 1, GRIDFS_CHUNK - 3, 1, GRIDFS_CHUNK - 1, GRIDFS_CHUNK + 1, 5],
        # over 5 MiB (an S3 part) in uneven pieces: a part edge falls inside an append
        [3 * MIB + 1, 4 * MIB - 5, 2 * MIB + 100, 1, 777],
    ],
    ids=["chunk-edges", "part-edges"],
)
async def test_appends_of_any_size(
    storage: Storage, sizes: list[int], raw_leftovers: Callable[..., list[str]]
) -> None:
    data = os.urandom(sum(sizes))
    state = await begin(storage, "big.webm", length=len(data))
    for size in sizes:
        start = state.offset
        # each append itself in pieces that match no storage size
        state = await storage.append_upload(
            state.id, start, pieces(data[start : start + size], 100_003)
        )
        assert state.offset == start + size
    assert (await storage.upload_state(state.id)).offset == len(data)
    await invisible(storage, state)
    info = await storage.complete_upload(state.id)
    assert (info.length, info.md5, info.metadata["sha256"]) == (len(data), md5(data), sha256(data))
    assert await read_all(storage, info) == data
    assert await leftovers_of(raw_leftovers, "big.webm") == []


async def test_wrong_offset_is_a_conflict(storage: Storage) -> None:
    state = await begin(storage)
    with pytest.raises(UploadConflict):
        await storage.append_upload(state.id, 5, pieces(DATA[5:10]))
    state = await append(storage, state, DATA[:1000])
    for offset in (0, 999, 1001):
        with pytest.raises(UploadConflict):
            await storage.append_upload(state.id, offset, pieces(DATA[offset : offset + 10]))
    assert (await storage.upload_state(state.id)).offset == 1000
    state = await append(storage, state, DATA[1000:])
    info = await storage.complete_upload(state.id)
    assert await read_all(storage, info) == DATA


async def test_deferred_length(storage: Storage) -> None:
    state = await begin(storage, "later.bin", length=None)
    assert state.length is None and not state.complete
    state = await append(storage, state, DATA[:400_000])
    assert (state.length, state.offset) == (None, 400_000)
    with pytest.raises(UploadConflict):
        await storage.complete_upload(state.id)  # no length yet: not complete
    with pytest.raises(UploadConflict):  # a length below what is stored
        await storage.append_upload(state.id, 400_000, pieces(b""), length=399_999)
    state = await storage.append_upload(
        state.id, 400_000, pieces(DATA[400_000:500_000]), length=len(DATA)
    )
    assert (state.length, state.offset) == (len(DATA), 500_000)
    assert (await storage.upload_state(state.id)).length == len(DATA)
    with pytest.raises(UploadConflict):  # set once: a different length is refused
        await storage.append_upload(state.id, 500_000, pieces(b""), length=len(DATA) + 1)
    # the same length again is no change
    state = await storage.append_upload(state.id, 500_000, pieces(DATA[500_000:]), length=len(DATA))
    assert state.complete
    info = await storage.complete_upload(state.id)
    assert (info.length, info.md5) == (len(DATA), md5(DATA))


async def test_bytes_past_the_length_are_refused(storage: Storage) -> None:
    data = DATA[:100_000]
    state = await begin(storage, "short.bin", length=len(data))
    state = await append(storage, state, data[:60_000])
    with pytest.raises(UploadConflict):
        await storage.append_upload(state.id, 60_000, pieces(data[60_000:] + b"too much", 7000))
    stored = await storage.upload_state(state.id)
    assert 60_000 <= stored.offset <= len(data)  # nothing past the length, ever
    if stored.offset < len(data):
        stored = await append(storage, stored, data[stored.offset :])
    info = await storage.complete_upload(stored.id)
    assert (info.length, await read_all(storage, info)) == (len(data), data)


async def test_checksum_match_and_mismatch(
    storage: Storage, raw_leftovers: Callable[..., list[str]]
) -> None:
    state = await begin(storage, "summed.bin")
    first = DATA[:300_000]  # ends inside a GridFS chunk: a mismatch must restore that tail
    state = await append(
        storage, state, first, checksum=Checksum("sha1", hashlib.sha1(first).digest())
    )
    assert state.offset == 300_000
    second = DATA[300_000:600_000]
    with pytest.raises(ChecksumMismatch):
        await append(
            storage, state, second, checksum=Checksum("sha256", hashlib.sha256(b"other").digest())
        )
    assert (await storage.upload_state(state.id)).offset == 300_000
    with pytest.raises(ChecksumMismatch):  # the bytes are wrong, the checksum is right
        await append(
            storage,
            state,
            bytes(len(second)),
            checksum=Checksum("sha256", hashlib.sha256(second).digest()),
        )
    assert (await storage.upload_state(state.id)).offset == 300_000
    state = await append(
        storage,
        state,
        DATA[300_000:],
        checksum=Checksum("sha256", hashlib.sha256(DATA[300_000:]).digest()),
    )
    info = await storage.complete_upload(state.id)
    assert (info.md5, info.metadata["sha256"]) == (md5(DATA), sha256(DATA))
    assert await read_all(storage, info) == DATA
    assert await leftovers_of(raw_leftovers, "summed.bin") == []


async def test_client_gone_keeps_the_bytes_received(
    storage: Storage, fresh: Callable[[], Storage]
) -> None:
    state = await begin(storage, "dropped.webm")

    async def cut_after(data: bytes) -> AsyncIterator[bytes]:
        async for piece in pieces(data, 100_000):
            yield piece
        raise ConnectionResetError("the client went away")

    with pytest.raises(ConnectionResetError):
        await storage.append_upload(state.id, 0, cut_after(DATA[:250_001]))
    stored = await fresh().upload_state(state.id)
    assert (stored.offset, stored.head) == (250_001, DATA[:HEAD_BYTES])
    await invisible(storage, stored)
    with pytest.raises((ConnectionResetError, ChecksumMismatch)):  # with a checksum: nothing kept
        await storage.append_upload(
            state.id,
            250_001,
            cut_after(DATA[250_001:400_000]),
            checksum=Checksum("sha1", hashlib.sha1(DATA[250_001:400_000]).digest()),
        )
    assert (await storage.upload_state(state.id)).offset == 250_001
    stored = await append(storage, stored, DATA[250_001:])
    info = await storage.complete_upload(state.id)
    assert (info.md5, await read_all(storage, info)) == (md5(DATA), DATA)


async def test_concurrent_appends_one_is_locked(
    storage: Storage, fresh: Callable[[], Storage]
) -> None:
    state = await begin(storage, "race.bin")
    started, release = asyncio.Event(), asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield DATA[:100_000]
        started.set()
        await release.wait()
        yield DATA[100_000:200_000]

    first = asyncio.ensure_future(storage.append_upload(state.id, 0, slow()))
    await asyncio.wait_for(started.wait(), 30)
    # the same object (this process) and another one (another process or host)
    for contender in (storage, fresh()):
        with pytest.raises(UploadLocked):
            await contender.append_upload(state.id, 0, pieces(b"x" * 1000))
    release.set()
    done = await asyncio.wait_for(first, 30)
    assert done.offset == 200_000  # the winner's bytes, none of the loser's
    state = await append(fresh(), done, DATA[200_000:])  # the lock is released with the append
    info = await storage.complete_upload(state.id)
    assert await read_all(storage, info) == DATA


# -- state in the storage ------------------------------------------------------------------


async def test_state_survives_a_fresh_instance(
    storage: Storage, fresh: Callable[[], Storage]
) -> None:
    expires = later(2)
    state = await begin(
        storage, "moved.webm", owner="ann", metadata={"filename": "m.webm"}, expires_at=expires
    )
    await append(storage, state, DATA[:123_457])
    await storage.close()
    other = fresh()
    seen = await other.upload_state(state.id)
    assert (seen.name, seen.length, seen.offset, seen.owner, seen.metadata) == (
        "moved.webm",
        len(DATA),
        123_457,
        "ann",
        {"filename": "m.webm"},
    )
    assert seen.head == DATA[:HEAD_BYTES]
    assert abs((seen.expires_at - expires).total_seconds()) < 1
    assert abs((seen.created_at - state.created_at).total_seconds()) < 1
    await append(other, seen, DATA[123_457:])
    info = await fresh().complete_upload(state.id)  # a third: saw none of the bytes go by
    assert (info.md5, info.metadata["sha256"]) == (md5(DATA), sha256(DATA))
    assert await read_all(other, info) == DATA


async def test_digests_when_processes_take_turns(
    storage: Storage, fresh: Callable[[], Storage]
) -> None:
    """A process's running digests are stale once another one appended: never trusted then."""
    other = fresh()
    state = await begin(storage, "turns.bin")
    state = await append(storage, state, DATA[:200_000])
    state = await append(other, state, DATA[200_000:400_000])
    state = await append(storage, state, DATA[400_000:])
    info = await storage.complete_upload(state.id)
    assert (info.md5, info.metadata["sha256"]) == (md5(DATA), sha256(DATA))


async def test_terminate_removes_everything(
    storage: Storage, fresh: Callable[[], Storage], raw_leftovers: Callable[..., list[str]]
) -> None:
    big = os.urandom(6 * MIB + 11)  # an S3 part and a tail, GridFS chunks and a partial one
    state = await begin(storage, "gone.webm", length=len(big) + 1000)
    state = await append(storage, state, big)
    assert await leftovers_of(raw_leftovers) != []  # it does store something meanwhile
    await fresh().terminate_upload(state.id)
    for call in (
        storage.upload_state(state.id),
        storage.append_upload(state.id, state.offset, pieces(b"more")),
        storage.complete_upload(state.id),
        storage.terminate_upload(state.id),
    ):
        with pytest.raises(UploadNotFound):
            await call
    with pytest.raises(FileNotFound):
        await storage.resolve("gone.webm")
    assert await leftovers_of(raw_leftovers) == []


async def test_expired_uploads(storage: Storage, raw_leftovers: Callable[..., list[str]]) -> None:
    now = datetime.now(timezone.utc)
    assert await storage.expired_uploads(now) == []
    past = await begin(storage, "old.bin", expires_at=now - timedelta(minutes=1))
    live = await begin(storage, "new.bin", expires_at=now + timedelta(hours=1))
    await append(storage, past, DATA[:1000])
    live = await append(storage, live, DATA[:1000])
    found = await storage.expired_uploads(datetime.now(timezone.utc))
    assert [u.id for u in found] == [past.id]
    assert (await storage.upload_state(past.id)).offset == 1000  # still answered until swept
    # an append may move the expiry (the handler extends it on each PATCH)
    live = await append(storage, live, DATA[1000:2000], expires_at=now - timedelta(seconds=1))
    assert abs(((await storage.upload_state(live.id)).expires_at - now).total_seconds()) < 2
    found = await storage.expired_uploads(datetime.now(timezone.utc))
    assert sorted(u.id for u in found) == sorted([past.id, live.id])
    assert len(await storage.expired_uploads(datetime.now(timezone.utc), limit=1)) == 1
    assert await storage.expired_uploads(now - timedelta(hours=1)) == []
    for upload in found:
        await storage.terminate_upload(upload.id)
    assert await storage.expired_uploads(datetime.now(timezone.utc)) == []
    assert await leftovers_of(raw_leftovers) == []


async def test_completing_an_incomplete_upload_is_a_conflict(storage: Storage) -> None:
    state = await begin(storage, "half.bin")
    state = await append(storage, state, DATA[:10])
    with pytest.raises(UploadConflict):
        await storage.complete_upload(state.id)
    assert (await storage.upload_state(state.id)).offset == 10
    await invisible(storage, state)


@pytest.mark.parametrize(
    "upload_id",
    ["nothing-here", "0123456789abcdef01234567", "../../etc/passwd", "a\x00b", "x" * 2000, ""],
)
async def test_unknown_ids(storage: Storage, upload_id: str) -> None:
    await begin(storage, "exists.bin")  # the storage takes uploads and has one: not that one
    for call in (
        storage.upload_state(upload_id),
        storage.append_upload(upload_id, 0, pieces(b"x")),
        storage.complete_upload(upload_id),
        storage.terminate_upload(upload_id),
    ):
        with pytest.raises(UploadNotFound):
            await call


async def test_a_real_id_of_another_shape_is_not_found(storage: Storage) -> None:
    """An id that differs from a real one in its last character finds nothing (GridFS: the
    files_id with a wrong token)."""
    state = await begin(storage, "mine.bin")
    forged = state.id[:-1] + ("A" if state.id[-1] != "A" else "B")
    with pytest.raises(UploadNotFound):
        await storage.upload_state(forged)
    with pytest.raises(UploadNotFound):
        await storage.append_upload(forged, 0, pieces(b"x"))
    with pytest.raises(UploadNotFound):
        await storage.terminate_upload(forged)
    assert (await storage.upload_state(state.id)).offset == 0


@pytest.mark.parametrize("wrapper", ["cached", "fallback"])
async def test_wrappers_delegate_to_the_writable_storage(
    wrapper: str, make_storage: Callable[[], Storage], tmp_path: Path
) -> None:
    storage: Storage
    if wrapper == "cached":
        storage = CachedStorage(make_storage(), 600 * 1024)
    else:
        storage = FallbackStorage(make_storage(), LocalStorage(tmp_path / "read-only"))
    try:
        state = await begin(storage, "wrapped.bin")
        assert (await storage.upload_state(state.id)).offset == 0
        state = await append(storage, state, DATA)
        info = await storage.complete_upload(state.id)
        resolved = await storage.resolve("wrapped.bin")
        assert (resolved.md5, await read_all(storage, resolved)) == (info.md5, DATA)
        doomed = await begin(storage, "doomed.bin", expires_at=later(-1))
        assert [u.id for u in await storage.expired_uploads(later(0))] == [doomed.id]
        await storage.terminate_upload(doomed.id)
        with pytest.raises(UploadNotFound):
            await storage.upload_state(doomed.id)
    finally:
        await storage.close()


async def test_completion_under_another_name(storage: Storage) -> None:
    state = await begin(storage, "show/asked.mp4", length=len(b"renamed bytes"))
    state = await append(storage, state, b"renamed bytes")
    info = await storage.complete_upload(state.id, name="show/asked (2).mp4")
    assert info.filename == "show/asked (2).mp4"
    assert await read_all(storage, await storage.resolve("show/asked (2).mp4")) == b"renamed bytes"
    with pytest.raises(FileNotFound):
        await storage.resolve("show/asked.mp4")
