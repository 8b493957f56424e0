"""What an upload left in a backend's raw store, for the resumable-upload and sweep tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest


def leftovers_checker(
    backend: str, request: pytest.FixtureRequest, local_root: Path
) -> Callable[..., list[str]]:
    """check(keep=()) -> what ``backend`` stores beyond the files named in ``keep``: chunks
    without a file and upload records (GridFS), files under ``.gridserve/`` bar sidecars and
    derived files (local), objects and multipart uploads (S3). [] when nothing is left."""
    # Fixtures resolved now: the check may run in a thread (its clients are synchronous).
    db = request.getfixturevalue("sync_db") if backend == "gridfs" else None
    server = request.getfixturevalue("s3_server") if backend == "s3" else None
    bucket = request.getfixturevalue("s3_bucket") if backend == "s3" else None

    def gridfs(keep: tuple[str, ...]) -> list[str]:
        assert db is not None
        files = {doc["_id"] for doc in db["fs.files"].find({}, {"_id": 1})}
        found = [f"file {doc['filename']}" for doc in db["fs.files"].find()]
        found = [item for item in found if item.removeprefix("file ") not in keep]
        orphans = {doc["files_id"] for doc in db["fs.chunks"].find({}, {"files_id": 1})} - files
        found += [f"chunks of {files_id}" for files_id in orphans]
        found += [f"upload record {doc['_id']}" for doc in db["fs.uploads"].find()]
        return found

    def local(keep: tuple[str, ...]) -> list[str]:
        found = []
        for path in sorted(local_root.rglob("*")):
            relative = path.relative_to(local_root)
            if not path.is_file():
                continue
            if relative.parts[0] != ".gridserve":
                if str(relative) not in keep:
                    found.append(f"file {relative}")
            elif relative.parts[1] not in ("meta", "derived"):
                found.append(f"private {relative}")
        return found

    def s3(keep: tuple[str, ...]) -> list[str]:
        from tests.test_storage_s3 import leftovers

        assert server is not None and bucket is not None
        keys, uploads = asyncio.run(leftovers(server, bucket))
        found = [f"object {key}" for key in keys if key.removeprefix("media/") not in keep]
        return found + [f"multipart {upload['Key']}" for upload in uploads]

    def check(keep: tuple[str, ...] = ()) -> list[str]:
        return {"gridfs": gridfs, "local": local, "s3": s3}[backend](keep)

    return check


async def leftovers_of(check: Callable[..., list[str]], *keep: str) -> list[str]:
    """``check`` run off the loop (its S3 and database clients are synchronous)."""
    return await asyncio.to_thread(check, tuple(keep))
