"""Helpers of the migration tests: one storage of each kind by URI (GridFS in the test
database, local disk, S3 on s3proxy), a set of files to move, the ``gridserve migrate``
process, and the comparison of what two servers answer for the same URL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import gridfs
import pymongo
import requests

from gridserve.storage import Storage, from_uri
from tests.livehttp import LiveServer
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Proxy

KINDS = ("gridfs", "local", "s3")
DIRECTIONS = [(a, b) for a in KINDS for b in KINDS if a != b]
COMPARED_HEADERS = (
    "ETag",
    "Last-Modified",
    "Content-Type",
    "Content-Disposition",
    "Content-Length",
    "Content-Range",
    "Accept-Ranges",
)
SyncDB = pymongo.database.Database[dict[str, Any]]


@dataclass
class Side:
    """One end of a migration: its kind, its URI and a factory of its storage."""

    kind: str
    uri: str

    def make(self) -> Storage:
        return from_uri(self.uri)


def gridfs_side(mongo_uri: str, db_name: str, bucket: str) -> Side:
    return Side("gridfs", f"{mongo_uri.rstrip('/')}/{db_name}?bucket={bucket}")


def local_side(root: Path) -> Side:
    return Side("local", str(root))


def s3_side(server: S3Proxy, bucket: str, prefix: str) -> Side:
    return Side(
        "s3",
        f"s3://{ACCESS_KEY}:{SECRET_KEY}@{bucket}/{prefix}"
        f"?endpoint={server.endpoint}&region=us-east-1",
    )


# -- the set of files ----------------------------------------------------------------------

BIG = os.urandom(300_000)  # several chunks on every backend's block size
SONG_REVISIONS = (b"one", b"two!", b"three")


@dataclass(frozen=True)
class Seeded:
    name: str
    data: bytes
    content_type: str | None = None
    metadata: dict[str, Any] | None = None


SET = (
    Seeded("música/canción ñ.mp3", os.urandom(3000), "audio/mpeg", {"artist": "Ñu", "n": 3}),
    Seeded("show/s1/ep 1.webm", BIG, "video/webm", {"owner": "ann", "tags": ["a", "b"]}),
    Seeded("empty.txt", b""),
    Seeded("notes/readme", b"plain words\n"),
)


async def _one(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 50_000):
        yield data[i : i + 50_000]


def seed(side: Side, sync_db: SyncDB | None = None) -> int:
    """Stores :data:`SET` and the song's revisions in ``side``; returns how many files a
    revision-keeping target should end up with. On GridFS, the first half of the set and the
    song's revisions go in through PyMongo's GridFSBucket, as other applications store them
    (no md5, no sha256: their ETag comes from id, length and date)."""
    if side.kind == "gridfs":
        assert sync_db is not None
        bucket_name = side.uri.rsplit("bucket=", 1)[1]
        bucket = gridfs.GridFSBucket(sync_db, bucket_name, chunk_size_bytes=64 * 1024)
        for item in SET[:2]:
            file_id = bucket.upload_from_stream(item.name, item.data, metadata=item.metadata)
            if item.content_type:
                sync_db[f"{bucket_name}.files"].update_one(
                    {"_id": file_id}, {"$set": {"contentType": item.content_type}}
                )
        for revision in SONG_REVISIONS:
            bucket.upload_from_stream("song.ogg", revision)
        saved_by_us: tuple[Seeded, ...] = SET[2:]
    else:
        saved_by_us = SET

    async def save() -> None:
        storage = side.make()
        try:
            for item in saved_by_us:
                await storage.save(
                    item.name,
                    _one(item.data),
                    content_type=item.content_type,
                    metadata=item.metadata,
                )
            if side.kind != "gridfs":
                for revision in SONG_REVISIONS:
                    await storage.save("song.ogg", _one(revision))
        finally:
            await storage.close()

    asyncio.run(save())
    return len(SET) + len(SONG_REVISIONS)


# -- the command ---------------------------------------------------------------------------


def migrate_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gridserve.cli", "migrate", *args]


def run_migrate(*args: str, timeout: float = 300) -> tuple[int, dict[str, Any], str]:
    """Runs ``gridserve migrate``: (exit code, the JSON summary or {}, stderr)."""
    result = subprocess.run(migrate_command(*args), capture_output=True, text=True, timeout=timeout)
    summary = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.returncode, summary, result.stderr


# -- servers -------------------------------------------------------------------------------


def served(make: Callable[[], Storage]) -> LiveServer:
    return LiveServer(make).start()


def file_url(server: LiveServer, key: str, query: str = "") -> str:
    return server.url("/fs/" + quote(key, safe="/")) + query


REQUESTS: tuple[dict[str, str], ...] = (
    {},
    {"Range": "bytes=1-5"},
    {"Range": "bytes=-100"},
    {"Range": "bytes=70000-"},
)


def answers(server: LiveServer, key: str, query: str = "") -> list[tuple[Any, ...]]:
    """What ``server`` answers for ``key`` to a plain GET, a few ranges, and conditional
    GETs with the validators it gave: status, compared headers and body of each."""
    seen: list[tuple[Any, ...]] = []
    first: requests.Response | None = None
    for headers in REQUESTS:
        response = requests.get(file_url(server, key, query), headers=headers, timeout=30)
        first = first or response
        shown = tuple(response.headers.get(h) for h in COMPARED_HEADERS)
        seen.append((response.status_code, shown, response.content))
    assert first is not None and first.status_code == 200, (key, first and first.status_code)
    for headers in (
        {"If-None-Match": first.headers["ETag"]},
        {"If-Modified-Since": first.headers["Last-Modified"]},
        {"Range": "bytes=0-0", "If-Range": first.headers["ETag"]},
    ):
        response = requests.get(file_url(server, key, query), headers=headers, timeout=30)
        seen.append((response.status_code, response.headers.get("ETag"), response.content))
    return seen
