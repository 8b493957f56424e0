"""``gridserve migrate`` as a real process, in all six directions between GridFS (the test
database), local disk and S3 (s3proxy): every URL of the source answers the same from the
target (bytes, ETag, Last-Modified, type, disposition), and a second run copies nothing."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
from pathlib import Path
from typing import Any

import gridfs
import pytest

from gridserve.migrate import sha256_of
from gridserve.storage import Storage
from tests.dbserver import free_port
from tests.migration import (
    DIRECTIONS,
    SET,
    SONG_REVISIONS,
    Side,
    SyncDB,
    answers,
    gridfs_side,
    local_side,
    migrate_command,
    run_migrate,
    s3_side,
    seed,
    served,
)
from tests.s3server import SECRET_KEY


@pytest.fixture
def sides(request: pytest.FixtureRequest, mongo_uri: str, db_name: str, tmp_path: Path) -> Any:
    def make(kind: str, role: str) -> Side:
        if kind == "gridfs":
            return gridfs_side(mongo_uri, db_name, role)
        if kind == "local":
            return local_side(tmp_path / role)
        server = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        return s3_side(server, bucket, role)

    return make


def names_in(side: Side) -> list[str]:
    async def names() -> list[str]:
        storage = side.make()
        try:
            return [info.filename async for info in storage.list(limit=1000)]
        finally:
            await storage.close()

    return asyncio.run(names())


@pytest.mark.parametrize(("source_kind", "target_kind"), DIRECTIONS)
def test_every_url_answers_the_same_after_the_move(
    sides: Any, sync_db: SyncDB, source_kind: str, target_kind: str
) -> None:
    source, target = sides(source_kind, "src"), sides(target_kind, "dst")
    stored = seed(source, sync_db)
    newest_only_source = source_kind != "gridfs"
    status, summary, stderr = run_migrate("--from", source.uri, "--to", target.uri, "--jobs", "3")
    assert status == 0, stderr
    assert summary["failed"] == 0 and summary["errors"] == [] and summary["interrupted"] is None
    names = len(SET) + 1
    if target_kind == "gridfs" and not newest_only_source:
        assert summary["copied"] == stored
    else:
        assert summary["copied"] == names
        older = 0 if newest_only_source else len(SONG_REVISIONS) - 1
        assert summary["skipped_revisions"] == older
    assert summary["bytes"] == sum(len(i.data) for i in SET) + len(SONG_REVISIONS[-1])
    assert SECRET_KEY not in str(summary) + stderr  # S3 credentials are masked
    assert names_in(target) == names_in(source)

    before, after = served(source.make), served(target.make)
    try:
        for name in [*(item.name for item in SET), "song.ogg"]:
            assert answers(after, name) == answers(before, name), name
        if target_kind == "gridfs":  # a newest-only source has one revision: rev 0 is it
            assert (
                answers(after, "song.ogg", "?rev=0")[0][2]
                == SONG_REVISIONS[0 if not newest_only_source else -1]
            )
    finally:
        before.stop()
        after.stop()

    status, again, stderr = run_migrate("--from", source.uri, "--to", target.uri)
    assert status == 0, stderr
    assert again["copied"] == 0 and again["bytes"] == 0
    assert again["skipped"] == summary["copied"]


def test_between_gridfs_buckets_ids_and_every_revision_survive(sides: Any, sync_db: SyncDB) -> None:
    source, target = sides("gridfs", "src"), sides("gridfs", "dst")
    seed(source, sync_db)
    status, summary, stderr = run_migrate("--from", source.uri, "--to", target.uri)
    assert status == 0, stderr
    assert summary["skipped_revisions"] == 0
    documents = list(sync_db["src.files"].find({}, {"chunkSize": 0}).sort("_id"))
    copies = list(sync_db["dst.files"].find({}, {"chunkSize": 0}).sort("_id"))
    assert copies == documents  # ids, names, dates, md5 (or none), metadata, type: verbatim
    before, after = served(source.make), served(target.make)
    try:
        for document in documents:
            assert answers(after, str(document["_id"])) == answers(before, str(document["_id"]))
        for rev in ("?rev=0", "?rev=1", "?rev=-1", "?rev=-2"):
            assert answers(after, "song.ogg", rev) == answers(before, "song.ogg", rev)
    finally:
        before.stop()
        after.stop()

    status, moved, stderr = run_migrate("--from", source.uri, "--to", target.uri, "--delete-source")
    assert status == 0, stderr
    assert (moved["copied"], moved["skipped"], moved["deleted"]) == (0, len(copies), len(copies))
    assert sync_db["src.files"].count_documents({}) == 0
    assert sync_db["src.chunks"].count_documents({}) == 0
    assert list(sync_db["dst.files"].find({}, {"chunkSize": 0}).sort("_id")) == documents


def test_only_dry_run_delete_source_and_exit_codes(
    sides: Any, sync_db: SyncDB, tmp_path: Path
) -> None:
    source, target = sides("gridfs", "src"), sides("local", "dst")
    seed(source, sync_db)

    status, plan, _ = run_migrate("--from", source.uri, "--to", target.uri, "--dry-run")
    assert status == 0 and plan["dry_run"] is True
    assert sorted(f["name"] for f in plan["files"]) == sorted([*(i.name for i in SET), "song.ogg"])
    assert {f["action"] for f in plan["files"]} == {"copy"}
    assert names_in(target) == []

    status, moved, _ = run_migrate(
        "--from", source.uri, "--to", target.uri, "--only", "show/", "--delete-source"
    )
    assert status == 0 and moved["copied"] == 1 and moved["deleted"] == 1
    assert names_in(target) == ["show/s1/ep 1.webm"]
    assert "show/s1/ep 1.webm" not in names_in(source)

    # Into a newest-only storage, --delete-source removes every revision of a moved name.
    status, moved, _ = run_migrate(
        "--from", source.uri, "--to", target.uri, "--only", "song", "--delete-source"
    )
    assert status == 0 and moved["skipped_revisions"] == 2 and moved["deleted"] == 3
    assert sync_db["src.files"].count_documents({"filename": "song.ogg"}) == 0

    # A name the target cannot hold fails that file alone: exit 1, the others copied.
    sync_db["src.files"].update_one({"filename": "empty.txt"}, {"$set": {"filename": "a/../b"}})
    status, partial, _ = run_migrate("--from", source.uri, "--to", target.uri)
    assert status == 1
    assert [e["name"] for e in partial["errors"]] == ["a/../b"]
    assert partial["copied"] == 2 and partial["failed"] == 1

    dead = f"mongodb://user:hunter22@127.0.0.1:{free_port()}/x?serverSelectionTimeoutMS=300"
    status, _, stderr = run_migrate("--from", dead, "--to", target.uri)
    assert status == 1
    assert "cannot reach storage mongodb://user:***@127.0.0.1" in stderr
    assert "hunter22" not in stderr
    inside = str(Path(target.uri) / "sub")
    same_bucket = source.uri.replace("?bucket=src", "?bucket=src&appname=x")
    for bad in (
        ["--from", "s3://b?nope=1", "--to", target.uri],
        ["--from", target.uri, "--to", f"file:{target.uri}"],  # the same directory
        ["--from", target.uri, "--to", inside],  # would copy its own copies again
        ["--from", source.uri, "--to", same_bucket],
        ["--from", str(tmp_path / "typo"), "--to", target.uri],  # no such source directory
    ):
        status, _, stderr = run_migrate(*bad)
        assert status == 2 and stderr.startswith("gridserve: "), bad
    assert not (tmp_path / "typo").exists() and not Path(inside).exists()
    status, _, stderr = run_migrate("--from", target.uri, "--to", source.uri, "--jobs", "0")
    assert status == 2


def test_a_copy_that_does_not_match_its_source_digest_is_refused(
    sides: Any, sync_db: SyncDB
) -> None:
    source, target = sides("gridfs", "src"), sides("local", "dst")
    seed(source, sync_db)
    # A stored md5 that the content does not have: the copy is refused, nothing is left.
    sync_db["src.files"].update_one({"filename": "notes/readme"}, {"$set": {"md5": "0" * 32}})
    status, summary, _ = run_migrate("--from", source.uri, "--to", target.uri)
    assert status == 1
    assert [e["name"] for e in summary["errors"]] == ["notes/readme"]
    assert "md5" in summary["errors"][0]["error"]
    assert "notes/readme" not in names_in(target)
    assert list((Path(target.uri) / ".gridserve" / "tmp").iterdir()) == []


async def content_digests(storage: Storage) -> dict[str, str]:
    return {
        info.filename: await sha256_of(storage, await storage.resolve(info.filename))
        async for info in storage.list(limit=1000)
    }


def test_names_are_normalised_as_uploads_normalise_them(sides: Any, sync_db: SyncDB) -> None:
    source, target = sides("gridfs", "src"), sides("local", "dst")
    decomposed = "cafe\u0301/menu.txt"  # as a macOS client may have stored it
    gridfs.GridFSBucket(sync_db, "src").upload_from_stream(decomposed, b"menu")
    status, summary, stderr = run_migrate("--from", source.uri, "--to", target.uri)
    assert status == 0, stderr
    assert summary["renamed"] == [{"from": decomposed, "to": "caf\u00e9/menu.txt"}]
    assert names_in(target) == ["caf\u00e9/menu.txt"]


def test_on_a_terminal_a_progress_line_and_a_readable_summary(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "a").mkdir(parents=True)
    (source / "a" / "clip.webm").write_bytes(b"x" * 100_000)
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        migrate_command("--from", str(source), "--to", str(tmp_path / "dst")),
        stdout=follower,
        stderr=follower,
        stdin=subprocess.DEVNULL,
    )
    os.close(follower)
    output = b""
    while True:
        try:
            block = os.read(leader, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not block:
            break
        output += block
    os.close(leader)
    assert process.wait(timeout=60) == 0
    text = output.decode()
    assert "\rmigrate  1 file(s)" in text
    assert "copied 1 (0.1 MiB" in text and "{" not in text
