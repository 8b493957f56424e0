"""Throughput of ``gridserve migrate`` from GridFS to local disk and to S3, in MB/s.

Run through ``scripts/bench --migrate`` (which provides the test database and s3proxy). Seeds
one GridFS bucket of the test database with ``--files`` files of ``--size`` MiB (255 KiB
chunks, stored as PyMongo's GridFSBucket stores them), then times ``gridserve migrate`` into
a fresh target for each direction and ``--jobs`` value, with ``--verify`` (the default: every
copy read back) and without. Beside them, the floor: the driver alone reading every chunk of
the same files (the fastest any GridFS source can be read on this database).

MB/s are 10^6 bytes of file content per second of the run (as the summary's ``mb_per_s``:
listing, copying and verifying; not the process start).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import gridfs  # noqa: E402
import pymongo  # noqa: E402

from scripts.benchtools import CHUNK, MIB  # noqa: E402
from tests.dbserver import FerretDB, ferretdb_binary  # noqa: E402
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Proxy, s3proxy_jar  # noqa: E402


def seed(db: Any, files: int, size: int) -> int:
    bucket = gridfs.GridFSBucket(db, "src", chunk_size_bytes=CHUNK)
    block = os.urandom(size)
    for i in range(files):
        bucket.upload_from_stream(f"media/clip-{i:03}.webm", block[i:] + block[:i])
    return files * size


def driver_floor(db: Any) -> float:
    """MB/s of the driver reading every chunk of the bucket, file by file."""
    started = time.monotonic()
    total = 0
    for document in db["src.files"].find({}, {"_id": 1}):
        for chunk in db["src.chunks"].find(
            {"files_id": document["_id"]}, {"data": 1}, sort=[("n", 1)], batch_size=2
        ):
            total += len(chunk["data"])
    return total / (time.monotonic() - started) / 1e6


async def create_bucket(s3: S3Proxy, name: str) -> None:
    from aiobotocore.session import get_session

    async with get_session().create_client("s3", **s3.client_options()) as client:
        await client.create_bucket(Bucket=name)


def migrate(source: str, target: str, *extra: str) -> dict[str, Any]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gridserve.cli",
            "migrate",
            "--from",
            source,
            "--to",
            target,
            *extra,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"migrate failed ({result.returncode}): {result.stderr}{result.stdout}")
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--size", type=int, default=16, help="MiB per file")
    parser.add_argument("--jobs", default="1,4", help="comma-separated --jobs values")
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on SIGTERM too
    database = FerretDB(ferretdb_binary())
    s3 = S3Proxy(s3proxy_jar())
    work = Path(tempfile.mkdtemp(prefix="gridserve-bench-migrate-"))
    database.start()
    s3.start()
    try:
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(database.uri)
        db = client["bench"]
        total = seed(db, args.files, args.size * MIB)
        source = f"{database.uri.rstrip('/')}/bench?bucket=src"
        print(f"{args.files} files of {args.size} MiB ({total / 1e6:.0f} MB) in GridFS")
        floor = driver_floor(db)
        print(f"{'driver reads every chunk (floor)':<44} {floor:8.1f} MB/s")
        run = 0
        for jobs in args.jobs.split(","):
            for verify in ("--verify", "--no-verify"):
                for kind in ("local", "s3"):
                    run += 1
                    if kind == "local":
                        target = str(work / f"local-{run}")
                    else:
                        bucket = f"bench-{run}"
                        asyncio.run(create_bucket(s3, bucket))
                        target = (
                            f"s3://{ACCESS_KEY}:{SECRET_KEY}@{bucket}/media"
                            f"?endpoint={s3.endpoint}&region=us-east-1"
                        )
                    summary = migrate(source, target, "--jobs", jobs, verify)
                    assert summary["copied"] == args.files and summary["bytes"] == total
                    label = f"migrate GridFS -> {kind}, --jobs {jobs} {verify}"
                    print(f"{label:<44} {summary['mb_per_s']:8.1f} MB/s")
                    if kind == "local":
                        shutil.rmtree(target, ignore_errors=True)
        client.close()
    finally:
        s3.cleanup()
        database.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
