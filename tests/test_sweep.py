"""The sweep and ``gridserve fsck``: leftovers of interrupted uploads on every storage."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from gridserve.storage.base import Storage
from gridserve.storage.cache import CachedStorage
from gridserve.storage.fallback import FallbackStorage
from gridserve.storage.gridfs import GridFSStorage
from gridserve.storage.local import LocalStorage
from gridserve.storage.resumable import UploadNotFound
from gridserve.storage.s3 import S3Storage
from gridserve.sweep import forget_upload, record_upload, sweep
from tests.conftest import BACKENDS
from tests.s3server import S3Proxy
from tests.test_cli import gridserve
from tests.test_storage_s3 import leftovers
from tests.uploadleftovers import leftovers_checker, leftovers_of

DAY = 24 * 3600.0


def old_id(days: float) -> ObjectId:
    return ObjectId.from_datetime(datetime.now(timezone.utc) - timedelta(days=days))


def chunks_of(db: Any, files_id: Any, count: int = 2) -> None:
    db["fs.chunks"].insert_many(
        [{"files_id": files_id, "n": n, "data": b"x" * 100} for n in range(count)]
    )


async def test_gridfs_orphans_found_then_repaired(sync_db: Any, async_db: Any) -> None:
    orphan, young, resumable, kept = old_id(3), ObjectId(), old_id(2.5), old_id(2)
    chunks_of(sync_db, orphan, 3)
    chunks_of(sync_db, young)  # an upload in progress: younger than the grace period
    chunks_of(sync_db, resumable)
    chunks_of(sync_db, kept)
    sync_db["fs.files"].insert_one(
        {"_id": kept, "filename": "kept.bin", "length": 200, "chunkSize": 100,
         "uploadDate": datetime.now(timezone.utc)}
    )  # fmt: skip
    storage = GridFSStorage(async_db)
    await record_upload(storage, resumable, datetime.now(timezone.utc) + timedelta(hours=1))

    found = await sweep(storage, grace=DAY)
    assert [(i.kind, i.what, i.count, i.deleted) for i in found.leftovers] == [
        ("chunks", str(orphan), 3, False)
    ]
    assert sync_db["fs.chunks"].count_documents({"files_id": orphan}) == 3  # a report only
    repaired = await sweep(storage, grace=DAY, repair=True)
    assert [(i.what, i.deleted) for i in repaired.leftovers] == [(str(orphan), True)]
    await forget_upload(storage, resumable)  # expired or abandoned: now it is an orphan
    after = await sweep(storage, grace=DAY, repair=True)
    assert [(i.what, i.deleted) for i in after.leftovers] == [(str(resumable), True)]
    assert sorted(sync_db["fs.chunks"].distinct("files_id")) == sorted([young, kept])


async def test_gridfs_sweep_is_bounded_and_leased(sync_db: Any, async_db: Any) -> None:
    ids = [old_id(days) for days in (5, 4, 3)]
    for files_id in ids:
        chunks_of(sync_db, files_id, 1)
    storage = GridFSStorage(async_db)
    first = await sweep(storage, grace=DAY, batch=2, owner="a")
    assert not first.complete and [i.what for i in first.leftovers] == [str(i) for i in ids[:2]]
    assert (await sweep(storage, grace=DAY, owner="b")).skipped  # "a" holds the lease
    second = await sweep(storage, grace=DAY, batch=2, owner="a")  # goes on where it stopped
    assert second.complete and [i.what for i in second.leftovers] == [str(ids[2])]
    sync_db["gridserve.leases"].update_one(
        {}, {"$set": {"expires": datetime.now(timezone.utc) - timedelta(seconds=1)}}
    )
    taken_over = await sweep(storage, grace=DAY, owner="b")  # the lease expired
    assert taken_over.skipped is None and len(taken_over.leftovers) == 3


async def test_local_temporary_files(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    assert (await sweep(storage, grace=DAY)).leftovers == []  # no tmp directory before a write
    tmp = tmp_path / ".gridserve" / "tmp"
    tmp.mkdir(parents=True)  # what a crash mid-upload leaves: temporaries of either layout
    stale = [tmp / "up-stale", tmp / "meta-stale", tmp / "upload-stale"]
    fresh = tmp / "up-fresh"
    for size, path in enumerate(stale, start=10):
        path.write_bytes(b"x" * size)
    fresh.write_bytes(b"y")
    past = time.time() - 2 * DAY
    for path in stale:
        os.utime(path, (past, past))
    report = await sweep(storage, grace=DAY, repair=True)
    assert sorted((i.kind, i.size, i.deleted) for i in report.leftovers) == [
        ("temp", 10, True),
        ("temp", 11, True),
        ("temp", 12, True),
    ]
    assert sorted(p.name for p in tmp.iterdir()) == ["up-fresh"]


async def test_s3_multipart_uploads_it_started(s3_server: S3Proxy, s3_bucket: str) -> None:
    storage = S3Storage(s3_bucket, "media", **s3_server.client_options())
    other = S3Storage(s3_bucket, "elsewhere", **s3_server.client_options())
    try:
        s3 = await storage._s3()
        await s3.create_multipart_upload(Bucket=s3_bucket, Key="media/left.webm")
        await s3.create_multipart_upload(Bucket=s3_bucket, Key="elsewhere/theirs.webm")
        assert (await sweep(storage, grace=DAY)).leftovers == []  # too young
        report = await sweep(storage, grace=0, repair=True)
        assert [(i.kind, i.what.split()[0], i.deleted) for i in report.leftovers] == [
            ("multipart", "media/left.webm", True)
        ]
        _, pending = await leftovers(s3_server, s3_bucket)
        assert [u["Key"] for u in pending] == ["elsewhere/theirs.webm"]  # not its prefix
    finally:
        await storage.close()
        await other.close()


def test_fsck_reports_then_repairs(sync_db: Any, mongo_uri: str, db_name: str) -> None:
    orphan = old_id(2)
    chunks_of(sync_db, orphan, 2)
    base, _, query = mongo_uri.partition("?")
    uri = f"{base.rstrip('/')}/{db_name}" + (f"?{query}" if query else "")
    found = subprocess.run(
        gridserve("fsck", "--storage", uri), capture_output=True, text=True, timeout=60
    )
    assert found.returncode == 3, found.stderr
    assert f"found\tchunks\t{orphan}\t2" in found.stdout
    repaired = subprocess.run(
        gridserve("fsck", "--storage", uri, "--repair", "--json"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert repaired.returncode == 0, repaired.stderr
    assert '"deleted": true' in repaired.stdout
    assert sync_db["fs.chunks"].count_documents({}) == 0


# -- expired resumable uploads -------------------------------------------------------------


@pytest.fixture
def raw_leftovers(
    backend: str, request: pytest.FixtureRequest, local_root: Path
) -> Callable[..., list[str]]:
    return leftovers_checker(backend, request, local_root)


async def _pieces(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
async def test_expired_uploads_swept_to_zero_leftovers(
    make_storage: Callable[[], Storage], raw_leftovers: Callable[..., list[str]]
) -> None:
    storage = make_storage()
    now = datetime.now(timezone.utc)
    # chunks, S3 parts (8 MiB) and a tail, a bytes file
    big = os.urandom(9 * 1024 * 1024 + 5)
    try:
        try:
            doomed = await storage.begin_upload(
                "doomed.webm", length=len(big) + 1, owner="", metadata={}, expires_at=now
            )
        except NotImplementedError:
            pytest.skip(f"{type(storage).__name__} takes no resumable uploads yet")
        live = await storage.begin_upload(
            "live.webm", length=len(big), owner="", metadata={}, expires_at=now + timedelta(hours=1)
        )
        await storage.append_upload(doomed.id, 0, _pieces(big))
        # a part and a byte: a live multipart upload, which even grace 0 must not abort
        live = await storage.append_upload(live.id, 0, _pieces(big[: 8 * 1024 * 1024 + 1]))
        await asyncio.sleep(0.01)  # past the doomed one's expiry

        found = await sweep(storage, grace=DAY)
        assert [(i.kind, i.what, i.size, i.deleted) for i in found.leftovers] == [
            ("upload", f"{doomed.id} doomed.webm", len(big), False)
        ]
        assert (await storage.upload_state(doomed.id)).offset == len(big)  # a report only
        # grace 0: every temporary, orphan chunk and multipart upload is fair game, but not
        # what a live upload keeps
        repaired = await sweep(storage, grace=0, repair=True)
        assert [(i.kind, i.what, i.deleted) for i in repaired.leftovers] == [
            ("upload", f"{doomed.id} doomed.webm", True)
        ]
        with pytest.raises(UploadNotFound):
            await storage.upload_state(doomed.id)
        assert (await sweep(storage, grace=0, repair=True)).leftovers == []

        # the live upload lost nothing: it finishes with the right bytes
        live = await storage.append_upload(live.id, live.offset, _pieces(big[live.offset :]))
        info = await storage.complete_upload(live.id)
        assert info.metadata["sha256"] == hashlib.sha256(big).hexdigest()
        assert await leftovers_of(raw_leftovers, "live.webm") == []
    finally:
        await storage.close()


async def test_sweep_goes_through_a_cache_and_a_fallback(
    sync_db: Any, async_db: Any, tmp_path: Path
) -> None:
    """The storage ``gridserve serve`` sweeps is wrapped in its chunk cache (GridFS and S3 by
    default) or a fallback chain: the sweep reaches the storage underneath."""
    orphan = old_id(3)
    chunks_of(sync_db, orphan, 2)
    cached = CachedStorage(GridFSStorage(async_db), 1024 * 1024)
    report = await sweep(cached, grace=DAY)
    assert report.skipped is None and [i.what for i in report.leftovers] == [str(orphan)]
    chain = FallbackStorage(GridFSStorage(async_db), LocalStorage(tmp_path))
    repaired = await sweep(chain, grace=DAY, repair=True)
    assert [(i.what, i.deleted) for i in repaired.leftovers] == [(str(orphan), True)]


def test_fsck_expired_uploads_of_a_local_storage(tmp_path: Path) -> None:
    async def begin() -> str:
        storage = LocalStorage(tmp_path)
        state = await storage.begin_upload(
            "old.bin", length=10, owner="", metadata={}, expires_at=datetime.now(timezone.utc)
        )
        await storage.append_upload(state.id, 0, _pieces(b"12345"))
        return state.id

    upload_id = asyncio.run(begin())
    found = subprocess.run(
        gridserve("fsck", "--storage", str(tmp_path)), capture_output=True, text=True, timeout=60
    )
    assert found.returncode == 3, found.stderr
    assert f"found\tupload\t{upload_id} old.bin\t1\t5\t" in found.stdout
    repaired = subprocess.run(
        gridserve("fsck", "--storage", str(tmp_path), "--repair"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert repaired.returncode == 0, repaired.stderr
    assert f"deleted\tupload\t{upload_id} old.bin" in repaired.stdout
    assert list((tmp_path / ".gridserve" / "uploads").iterdir()) == []
