"""``gridserve migrate`` interrupted (killed mid-file; the database stopped mid-run) and re-run
to completion with no duplicate and no partial file; and a server with ``--fallback-storage``
answering every request the same while files move under it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gridfs
import pymongo
import pytest
import requests

from gridserve.migrate import sha256_of
from gridserve.storage import FallbackStorage, Storage, from_uri
from tests.dbserver import FerretDB
from tests.livehttp import LiveServer
from tests.migration import (
    SyncDB,
    file_url,
    gridfs_side,
    local_side,
    migrate_command,
    run_migrate,
)

pytestmark = pytest.mark.slow
MIB = 1024 * 1024
DEADLINE = 120.0  # detects a hang; every step here takes a few seconds


def seed_big(db: SyncDB, bucket: str, count: int, size: int) -> dict[str, bytes]:
    """``count`` files of ``size`` bytes (plus two revisions of the first) via GridFSBucket."""
    files: dict[str, bytes] = {}
    store = gridfs.GridFSBucket(db, bucket, chunk_size_bytes=255 * 1024)
    for i in range(count):
        name = f"{chr(ord('a') + i)}-clip.webm"
        files[name] = os.urandom(size)
        if i == 0:
            store.upload_from_stream(name, os.urandom(1000))  # an older revision
        store.upload_from_stream(name, files[name], metadata={"n": i})
    return files


def stored_digests(uri: str) -> dict[str, str]:
    async def collect() -> dict[str, str]:
        storage = from_uri(uri)
        try:
            return {
                info.filename: await sha256_of(storage, await storage.resolve(info.filename))
                async for info in storage.list(limit=1000)
            }
        finally:
            await storage.close()

    return asyncio.run(collect())


def expected(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def wait_until(check: Any, process: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        if process is not None and process.poll() is not None:
            raise AssertionError(f"migrate exited first: {process.communicate()}")
        time.sleep(0.002)


def interrupted_migrate(
    source: str,
    target: str,
    ready: Callable[[], bool],
    interrupt: Callable[[subprocess.Popen[str]], object],
) -> tuple[int, str, str]:
    """Runs ``gridserve migrate --from SOURCE --to TARGET --jobs 1``; once ``ready()`` (while
    it runs), calls ``interrupt(process)`` and waits for its end: its exit status, stdout and
    stderr. A migrate still running when this leaves is killed."""
    process = subprocess.Popen(
        migrate_command("--from", source, "--to", target, "--jobs", "1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(ready, process)
        interrupt(process)
        stdout, stderr = process.communicate(timeout=DEADLINE)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, stdout, stderr


def test_killed_mid_file_then_rerun(
    mongo_uri: str, db_name: str, sync_db: SyncDB, tmp_path: Path
) -> None:
    files = seed_big(sync_db, "src", 3, 6 * MIB)
    source, target = gridfs_side(mongo_uri, db_name, "src"), local_side(tmp_path / "dst")
    spool = tmp_path / "dst" / ".gridserve" / "tmp"

    def mid_file() -> bool:
        return spool.is_dir() and any(p.stat().st_size > MIB for p in spool.iterdir())

    interrupted_migrate(source.uri, target.uri, mid_file, lambda p: p.send_signal(signal.SIGKILL))
    visible = stored_digests(target.uri)
    assert len(visible) < len(files)
    assert all(visible[name] == expected(files)[name] for name in visible)  # nothing partial

    status, summary, stderr = run_migrate("--from", source.uri, "--to", target.uri)
    assert status == 0, stderr
    assert summary["copied"] == len(files) - len(visible)
    assert summary["skipped"] == len(visible)
    assert stored_digests(target.uri) == expected(files)


def test_interrupted_by_sigint_mid_file_leaves_nothing_partial(
    mongo_uri: str, db_name: str, sync_db: SyncDB
) -> None:
    files = seed_big(sync_db, "src", 2, 6 * MIB)
    source, target = gridfs_side(mongo_uri, db_name, "src"), gridfs_side(mongo_uri, db_name, "dst")
    status, stdout, stderr = interrupted_migrate(
        source.uri,
        target.uri,
        lambda: sync_db["dst.chunks"].find_one({}, {"_id": 1}) is not None,
        lambda p: p.send_signal(signal.SIGINT),
    )
    assert status == 130, stderr
    assert '"interrupted": "interrupted by a signal"' in stdout
    # The copy in flight was abandoned cleanly: every chunk left belongs to a complete file.
    kept = {d["_id"]: d["length"] for d in sync_db["dst.files"].find({}, {"length": 1})}
    chunks = sync_db["dst.chunks"].count_documents({})
    assert chunks == sum(-(-length // (255 * 1024)) for length in kept.values())
    status, summary, stderr = run_migrate("--from", source.uri, "--to", target.uri)
    assert status == 0, stderr
    assert summary["copied"] + summary["skipped"] == len(files) + 1
    assert stored_digests(target.uri) == expected(files)


def test_database_stopped_mid_run_then_rerun(own_database: FerretDB) -> None:
    """GridFS to GridFS on one database that goes away mid-run: the run stops (exit 1), a
    re-run after the restart completes it, with every id once and no orphan chunk."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        own_database.uri, serverSelectionTimeoutMS=10000
    )
    db = client["media"]
    # Stopped once one file is copied, with nine to go: on an idle machine six files left too
    # little for the stop to land before the run ended.
    files = seed_big(db, "src", 10, 2 * MIB)
    quick = "serverSelectionTimeoutMS=1500&connectTimeoutMS=1000"
    source_uri = f"{own_database.uri.rstrip('/')}/media?bucket=src&{quick}"
    target_uri = f"{own_database.uri.rstrip('/')}/media?bucket=dst&{quick}"
    status, stdout, stderr = interrupted_migrate(
        source_uri,
        target_uri,
        lambda: db["dst.files"].count_documents({}) >= 1,
        lambda _: own_database.stop(),
    )
    assert status == 1, stderr
    assert '"interrupted": "' in stdout

    own_database.start()
    wait_until(lambda: db.command("ping")["ok"] == 1)
    status, summary, stderr = run_migrate("--from", source_uri, "--to", target_uri)
    assert status == 0, stderr
    assert summary["failed"] == 0
    source_ids = sorted(d["_id"] for d in db["src.files"].find({}, {"_id": 1}))
    target_ids = sorted(d["_id"] for d in db["dst.files"].find({}, {"_id": 1}))
    assert target_ids == source_ids  # every revision once
    chunks = sum(-(-d["length"] // (255 * 1024)) for d in db["src.files"].find())
    assert db["dst.chunks"].count_documents({}) == chunks  # no orphan, no duplicate chunk
    assert stored_digests(target_uri) == expected(files)
    client.close()


def test_a_fallback_server_answers_the_same_while_files_move(
    mongo_uri: str, db_name: str, sync_db: SyncDB, tmp_path: Path
) -> None:
    files = seed_big(sync_db, "src", 5, 400 * 1024)
    source, target = gridfs_side(mongo_uri, db_name, "src"), local_side(tmp_path / "dst")

    def make() -> Storage:
        return FallbackStorage(target.make(), source.make())

    server = LiveServer(make).start()
    seen: dict[str, set[str]] = {name: set() for name in files}
    statuses: list[int] = []
    moving = threading.Event()
    moving.set()

    def client() -> None:
        session = requests.Session()
        rounds_after = 2
        while moving.is_set() or rounds_after > 0:
            if not moving.is_set():
                rounds_after -= 1
            for name, data in files.items():
                for headers, want in (
                    ({}, data),
                    ({"Range": "bytes=300000-300099"}, data[300000:300100]),
                ):
                    response = session.get(file_url(server, name), headers=headers, timeout=30)
                    statuses.append(response.status_code)
                    seen[name].add(response.headers.get("ETag", "none"))
                    assert response.content == want, (name, headers, response.status_code)

    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            client()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=guarded)
    thread.start()
    try:
        wait_until(lambda: len(statuses) >= 2 * len(files) or bool(errors))  # serving already
        status, summary, stderr = run_migrate(
            "--from", source.uri, "--to", target.uri, "--delete-source", "--jobs", "2"
        )
    finally:
        moving.clear()
        thread.join(DEADLINE)
        server.stop()
    assert not errors, errors
    assert status == 0, stderr
    assert summary["deleted"] == len(files) + 1  # with the older revision of the first
    assert sync_db["src.files"].count_documents({}) == 0
    assert set(statuses) <= {200, 206} and len(statuses) >= 4 * len(files)
    assert all(len(tags) == 1 for tags in seen.values()), seen
    assert stored_digests(target.uri) == expected(files)
