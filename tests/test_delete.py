"""Deleting a name deletes the name: every revision, on every backend, over HTTP and the CLI."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import requests

from gridserve.storage import Storage
from tests.conftest import BACKENDS
from tests.livehttp import LiveServer
from tests.test_cli import gridserve
from tests.test_uploads_http import AUTH, put, writable  # noqa: F401 - fixtures

pytestmark = pytest.mark.parametrize("backend", BACKENDS, indirect=True)


async def once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_revisions_lists_every_revision_oldest_first(
    make_storage: Callable[[], Storage], backend: str
) -> None:
    storage = make_storage()
    try:
        assert await storage.revisions("r/a.txt") == []
        first = await storage.save("r/a.txt", once(b"one"))
        second = await storage.save("r/a.txt", once(b"two"))
        await storage.save("r/a.txt.bak", once(b"other"))
        found = await storage.revisions("r/a.txt")
        if backend == "gridfs":  # the only backend that keeps old revisions
            assert [info.id for info in found] == [first.id, second.id]
        else:
            assert [info.length for info in found] == [3] and found[0].md5 == second.md5
        assert await storage.revisions(str(second.id)) in ([], found[-1:])
    finally:
        await storage.close()


def test_delete_removes_every_revision_and_says_which(
    writable: LiveServer,  # noqa: F811
    backend: str,
    nothing_left: Callable[[], None],
) -> None:
    ids = [put(writable, "show/ep.webm", b"\x1aE\xdf\xa3" + os.urandom(9)).json()["id"]]
    ids.append(put(writable, "show/ep.webm", b"\x1aE\xdf\xa3" + os.urandom(9)).json()["id"])
    response = requests.delete(writable.url("/fs/show/ep.webm"), headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    deleted = response.json()["deleted"]
    # Before: 204 and GridFS deleted only the newest; the name was still listed and served.
    assert [file["id"] for file in deleted] == (ids if backend == "gridfs" else ids[-1:])
    assert all(file["filename"] == "show/ep.webm" for file in deleted)
    assert requests.get(writable.url("/fs/show/ep.webm"), timeout=10).status_code == 404
    assert requests.get(writable.url("/fs/show/"), timeout=10).json()["files"] == []
    nothing_left()


def test_delete_one_revision_or_one_id(writable: LiveServer, backend: str) -> None:  # noqa: F811
    if backend != "gridfs":
        pytest.skip("only GridFS keeps revisions")
    ids = [put(writable, "a.webm", b"\x1aE\xdf\xa3" + bytes([n])).json()["id"] for n in range(3)]
    oldest = requests.delete(writable.url("/fs/a.webm?rev=0"), headers=AUTH, timeout=10)
    assert [file["id"] for file in oldest.json()["deleted"]] == ids[:1]
    by_id = requests.delete(writable.url(f"/fs/{ids[2]}"), headers=AUTH, timeout=10)
    assert [file["id"] for file in by_id.json()["deleted"]] == ids[2:]
    assert requests.head(writable.url("/fs/a.webm"), timeout=10).headers["ETag"]
    left = requests.get(writable.url("/fs/"), timeout=10).json()["files"]
    assert [file["id"] for file in left] == ids[1:2]


def test_rm_removes_every_revision_on_gridfs(
    tmp_path: Path, mongo_uri: str, db_name: str, backend: str
) -> None:
    if backend != "gridfs":
        pytest.skip("the CLI on GridFS; HTTP covers the other backends")
    storage = ["--storage", mongo_uri.rstrip("/") + f"/{db_name}"]
    (tmp_path / "clip.txt").write_bytes(b"hello")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            gridserve(*args), cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
        )

    for _ in range(3):
        assert run("put", "clip.txt", *storage).returncode == 0
    one = run("rm", "clip.txt", "--rev", "-1", *storage)
    assert one.returncode == 0 and one.stdout.count("removed clip.txt") == 1, one.stderr
    every = run("rm", "clip.txt", *storage)
    # Before: only the newest went and the name was still listed and served.
    assert every.returncode == 0 and every.stdout.count("removed clip.txt") == 2, every.stderr
    assert run("ls", *storage).stdout == ""
    gone = run("rm", "clip.txt", *storage)
    assert gone.returncode == 1 and "no file clip.txt" in gone.stderr
