"""The sweep: finds (and with ``repair`` deletes) what interrupted uploads left behind when
nothing was there to clean up after them (a crash, a kill -9, another tool).

What it looks for, per storage:

GridFS
    chunks whose ``files_id`` has no file document and no live *upload record*, older than
    the grace period. Age is the ``files_id``'s ObjectId time (gridserve, mongofiles and every
    driver make it when the upload starts), else the chunk's own ``_id`` time; a chunk whose
    age cannot be told is reported, never deleted.
local disk
    temporary files (anything in the storage's private ``.gridserve/tmp``: upload and sidecar
    temporaries of every layout) not modified for the grace period.
S3
    multipart uploads under the storage's prefix (the keys it writes) initiated before the
    grace period.

Every storage
    *expired resumable uploads* (``storage.expired_uploads``), whatever their age otherwise:
    each is terminated (``terminate_upload``: its record or state and every chunk, part, tail
    or bytes file it stored), reported as an ``upload`` leftover. One that an append holds at
    that moment (:class:`UploadLocked`: its expiry may be moving) is reported and left for the
    next run. Live uploads are never touched: their local files are not in ``.gridserve/tmp``,
    their GridFS chunks have a live record, and an S3 multipart upload under
    ``.gridserve/upload-data/<id>/`` is kept while upload ``<id>`` is live.

A storage that wraps another (a chunk cache, a fallback chain) is swept through the one it
writes to.

**Upload records** keep resumable uploads safe: a resumable upload (the tus feature) writes its
chunks before any file document, and keeps them until it completes or expires. It registers
itself in ``<bucket>.uploads`` as ``{_id: <files_id>, expiresAt: <datetime>}``
(:func:`record_upload`); the sweep never touches the chunks of an id with an unexpired record,
whatever its age. The grace period (default a day, at least the resumable-upload expiry) also
protects in-flight writes of tools that know nothing of records.

**Cost.** The sweep never reads ``fs.chunks`` whole. It walks the *distinct* ``files_id``
values with the ``{files_id: 1, n: 1}`` index every driver creates: each step is one indexed
``find({files_id: {$gt: last}}).sort(files_id).limit(1)``, so a step costs one index seek
whatever the file's size, and a run takes at most ``batch`` steps (then one ``$in`` query on
``fs.files`` and one on the records per step batch). Where it stopped is kept in the lease
document, so the next run (of any process) continues there, and the walk starts over from the
lowest id once it reaches the end: every id is visited once a cycle, a run's cost is bounded.
Ids newer than the grace period are not walked at all (their range is cut by ``$lt``).

**Lease.** Of many processes sharing a database, one sweeps at a time: a run first takes the
lease document ``{_id: "sweep:<bucket>"}`` in ``gridserve.leases`` (taken when absent,
expired, or already its own), valid for ``lease_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo.errors import DuplicateKeyError, PyMongoError

from gridserve.storage.base import Storage, StorageUnavailable, utc
from gridserve.storage.resumable import UploadLocked, UploadNotFound
from gridserve.storage.wrapper import StorageWrapper

log = logging.getLogger("gridserve.sweep")

DEFAULT_GRACE = 24 * 3600.0
DEFAULT_INTERVAL = 3600.0
DEFAULT_BATCH = 1000
STARTUP_DELAY = 10.0
LEASE_COLLECTION = "gridserve.leases"
_FROM_LEASE: Any = object()
# Where S3Storage keeps a resumable upload's multipart upload: ``<prefix>.gridserve/upload-data/
# <id>/staging`` (gridserve.storage.s3uploads).
S3_UPLOAD_DATA = ".gridserve/upload-data/"


@dataclass
class Leftover:
    """One thing an interrupted upload left: ``kind`` is ``chunks``, ``temp``, ``multipart``
    or ``upload`` (an expired resumable upload); ``what`` names it (a files_id, a path, a key
    and upload id, a resumable upload's id and name); ``size`` in bytes where known (of an
    upload: the bytes it stored), ``count`` of chunks; ``age_seconds`` of an upload: since it
    expired."""

    kind: str
    what: str
    size: int = 0
    age_seconds: float = 0.0
    count: int = 1
    deleted: bool = False


@dataclass
class SweepReport:
    storage: str
    leftovers: list[Leftover] = field(default_factory=list)
    complete: bool = True  # False: the run stopped at its bound; the next one continues
    skipped: str | None = None  # why nothing was looked at (the lease is held elsewhere)
    checkpoint: Any = None  # GridFS: where a run that did not complete stopped

    def as_dict(self) -> dict[str, Any]:
        return {
            "storage": self.storage,
            "complete": self.complete,
            "skipped": self.skipped,
            "leftovers": [vars(item) for item in self.leftovers],
        }


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def record_upload(storage: Any, files_id: Any, expires_at: datetime) -> None:
    """Registers (or extends) a resumable upload whose chunks the sweep must keep until
    ``expires_at``. For the resumable-upload feature; :func:`forget_upload` when it is done."""
    records = storage.database[f"{storage.bucket}.uploads"]
    await records.update_one({"_id": files_id}, {"$set": {"expiresAt": expires_at}}, upsert=True)


async def forget_upload(storage: Any, files_id: Any) -> None:
    await storage.database[f"{storage.bucket}.uploads"].delete_one({"_id": files_id})


async def sweep(
    storage: Storage,
    *,
    grace: float = DEFAULT_GRACE,
    repair: bool = False,
    batch: int = DEFAULT_BATCH,
    lease_seconds: float = 600.0,
    owner: str | None = None,
    start: Any = _FROM_LEASE,
) -> SweepReport:
    """Looks for leftovers older than ``grace`` seconds; deletes them if ``repair``.

    GridFS: one bounded run (at most ``batch`` files) under the lease, from where the last run
    stopped; or, given ``start`` (None for the beginning, else a ``checkpoint`` a report
    returned), without the lease from there (what ``gridserve fsck`` does, to the end). A run
    without an ``owner`` releases the lease when done; a periodic sweeper names itself and
    keeps it (``lease_seconds``) between its runs.

    Expired resumable uploads are terminated first (GridFS: under the lease), at most
    ``batch`` a run; a run that continues from a ``checkpoint`` leaves them to the first."""
    from gridserve.storage.gridfs import GridFSStorage
    from gridserve.storage.local import LocalStorage

    while isinstance(storage, StorageWrapper):
        storage = storage.inner  # a cache or a fallback chain: the storage it writes
    if isinstance(storage, GridFSStorage):
        return await _sweep_gridfs(
            storage, grace, repair, batch, lease_seconds, owner or _owner(), start, owner is None
        )
    expired = await _sweep_uploads(storage, repair, batch, every=start is not _FROM_LEASE)
    if isinstance(storage, LocalStorage):
        report = await asyncio.to_thread(_sweep_local, storage, grace, repair)
    elif type(storage).__name__ == "S3Storage":
        report = await _sweep_s3(storage, grace, repair)
    else:
        report = SweepReport(storage.description)
        if not expired:
            report.skipped = "this storage has nothing to sweep"
    report.leftovers[:0] = expired
    return report


# -- expired resumable uploads, on every storage -------------------------------------------


async def _sweep_uploads(
    storage: Storage, repair: bool, batch: int, *, every: bool
) -> list[Leftover]:
    """Terminates (with ``repair``) the expired resumable uploads of ``storage``: ``batch``
    of them, or with ``every`` (fsck) all of them, a batch at a time."""
    now = datetime.now(timezone.utc)
    found: list[Leftover] = []
    seen: set[str] = set()
    while True:
        expired = [u for u in await storage.expired_uploads(now, batch) if u.id not in seen]
        for upload in expired:
            seen.add(upload.id)
            age = (now - upload.expires_at).total_seconds()
            item = Leftover("upload", f"{upload.id} {upload.name}", upload.offset, age)
            if repair:
                try:
                    await storage.terminate_upload(upload.id)
                except UploadNotFound:
                    continue  # completed or terminated meanwhile: nothing left
                except UploadLocked:
                    log.info("sweep: expired upload %s is being appended to: later", upload.id)
                else:
                    item.deleted = True
                    log.info("sweep: removed the expired upload %s (%s)", upload.id, upload.name)
            found.append(item)
        if not (every and repair) or len(expired) < batch:
            return found


# -- GridFS --------------------------------------------------------------------------------


async def _take_lease(storage: Any, owner: str, seconds: float) -> dict[str, Any] | None:
    leases = storage.database[LEASE_COLLECTION]
    now = datetime.now(timezone.utc)
    try:
        taken: dict[str, Any] | None = await leases.find_one_and_update(
            {
                "_id": f"sweep:{storage.bucket}",
                "$or": [{"expires": {"$lt": now}}, {"owner": owner}],
            },
            {"$set": {"owner": owner, "expires": now + timedelta(seconds=seconds)}},
            upsert=True,
            return_document=True,
        )
    except DuplicateKeyError:
        return None  # held by another process, not expired
    return taken


async def _sweep_gridfs(
    storage: Any,
    grace: float,
    repair: bool,
    batch: int,
    lease_seconds: float,
    owner: str,
    start: Any,
    release: bool,
) -> SweepReport:
    report = SweepReport(storage.description)
    try:
        last = start
        if start is _FROM_LEASE:
            lease = await _take_lease(storage, owner, lease_seconds)
            if lease is None:
                report.skipped = "another process holds the sweep lease"
                return report
            last = lease.get("checkpoint")
        if start is _FROM_LEASE or start is None:  # the first run of an fsck, or a periodic one
            report.leftovers += await _sweep_uploads(
                storage, repair, batch, every=start is not _FROM_LEASE
            )
        now = datetime.now(timezone.utc)
        horizon = ObjectId.from_datetime(now - timedelta(seconds=grace))
        ids: list[Any] = []
        while len(ids) < batch:
            query: dict[str, Any] = {"files_id": {"$lt": horizon}}
            if last is not None:
                query["files_id"]["$gt"] = last
            found = await storage.chunks.find_one(
                query, {"files_id": 1}, sort=[("files_id", 1), ("n", 1)]
            )
            if found is None:
                last = None  # the end: the next run starts over
                break
            last = found["files_id"]
            ids.append(last)
        report.complete = last is None
        report.checkpoint = last
        if ids:
            await _judge_gridfs(storage, ids, now, grace, repair, report)
        if start is _FROM_LEASE:
            done: dict[str, Any] = {"checkpoint": last}
            if release:
                done["expires"] = datetime.now(timezone.utc)
            await storage.database[LEASE_COLLECTION].update_one(
                {"_id": f"sweep:{storage.bucket}", "owner": owner}, {"$set": done}
            )
    except PyMongoError as exc:
        raise StorageUnavailable(f"sweep of {storage.description}: {exc}") from exc
    return report


async def _judge_gridfs(
    storage: Any,
    ids: list[Any],
    now: datetime,
    grace: float,
    repair: bool,
    report: SweepReport,
) -> None:
    present = {doc["_id"] async for doc in storage.files.find({"_id": {"$in": ids}}, {"_id": 1})}
    records = storage.database[f"{storage.bucket}.uploads"]
    # Live: not expired, or expired while an append holds its lease (the upload sweep leaves
    # it for later; its chunks are that append's).
    alive = {"$or": [{"expiresAt": {"$gt": now}}, {"lease.until": {"$gt": now}}]}
    live = {doc["_id"] async for doc in records.find({"_id": {"$in": ids}, **alive}, {"_id": 1})}
    for files_id in ids:
        if files_id in present or files_id in live:
            continue
        if not isinstance(files_id, ObjectId):
            # An id with no time in it (ids here are all older than the horizon by the $lt
            # order only for ObjectIds): report, never delete.
            report.leftovers.append(Leftover("chunks", f"{files_id!r} (age unknown)"))
            continue
        age = (now - files_id.generation_time).total_seconds()
        if age < grace:
            continue
        count = await storage.chunks.count_documents({"files_id": files_id})
        item = Leftover("chunks", str(files_id), age_seconds=age, count=count)
        if repair:
            await storage.chunks.delete_many({"files_id": files_id})
            item.deleted = True
            log.info("sweep: deleted the %d orphan chunk(s) of %s", count, files_id)
        report.leftovers.append(item)


# -- local disk ----------------------------------------------------------------------------


def _sweep_local(storage: Any, grace: float, repair: bool) -> SweepReport:
    report = SweepReport(storage.description)
    tmp: Path = storage.state / "tmp"
    now = time.time()
    # Everything in the private tmp directory is a temporary (``up-``/``meta-`` now, ``upload-``
    # in the first layout); it is absent until the first write.
    for path in sorted(tmp.glob("*")) if tmp.is_dir() else []:
        with contextlib.suppress(FileNotFoundError):
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode):
                continue
            age = now - st.st_mtime
            if grace > 0 and age < grace:
                continue
            item = Leftover("temp", str(path), st.st_size, age)
            if repair:
                path.unlink(missing_ok=True)
                item.deleted = True
                log.info("sweep: deleted the temporary file %s", path)
            report.leftovers.append(item)
    return report


# -- S3 ------------------------------------------------------------------------------------


async def _sweep_s3(storage: Any, grace: float, repair: bool) -> SweepReport:
    report = SweepReport(storage.description)
    s3 = await storage._s3()
    now = datetime.now(timezone.utc)
    options: dict[str, Any] = {"Bucket": storage.bucket, "Prefix": storage.prefix}
    try:
        while True:
            page = await s3.list_multipart_uploads(**options)
            for upload in page.get("Uploads") or []:
                age = (now - utc(upload["Initiated"])).total_seconds()
                if grace > 0 and age < grace:  # grace 0: everything (clocks differ)
                    continue
                if await _live_s3_upload(storage, upload["Key"], now):
                    continue
                item = Leftover("multipart", f"{upload['Key']} {upload['UploadId']}", 0, age)
                if repair:
                    await s3.abort_multipart_upload(
                        Bucket=storage.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    item.deleted = True
                    log.info("sweep: aborted the multipart upload of %s", upload["Key"])
                report.leftovers.append(item)
            if not page.get("IsTruncated"):
                break
            options["KeyMarker"] = page.get("NextKeyMarker")
            options["UploadIdMarker"] = page.get("NextUploadIdMarker")
    except Exception as exc:
        raise StorageUnavailable(f"sweep of {storage.description}: {exc}") from exc
    return report


async def _live_s3_upload(storage: Any, key: str, now: datetime) -> bool:
    """Whether the multipart upload at ``key`` is that of a resumable upload still live."""
    private = storage.prefix + S3_UPLOAD_DATA
    if not key.startswith(private):
        return False
    try:
        state = await storage.upload_state(key[len(private) :].split("/", 1)[0])
    except UploadNotFound:
        return False
    return bool(state.expires_at > now)


# -- periodic ------------------------------------------------------------------------------


async def sweep_periodically(
    storage: Storage,
    interval: float = DEFAULT_INTERVAL,
    grace: float = DEFAULT_GRACE,
    first_delay: float = STARTUP_DELAY,
) -> None:
    """Sweeps (with repair) ``first_delay`` seconds after startup and then every ``interval``
    seconds, until cancelled; a failed run is logged and retried at the next interval. For
    ``gridserve serve``. The delay lets the server answer its first requests first (an S3
    client's creation blocks the loop for a moment)."""
    owner = _owner()
    await asyncio.sleep(first_delay)
    while True:
        try:
            report = await sweep(
                storage, grace=grace, repair=True, lease_seconds=interval * 2, owner=owner
            )
            if report.leftovers:
                log.info(
                    "sweep: removed %d leftover(s) of interrupted uploads",
                    sum(item.deleted for item in report.leftovers),
                )
        except StorageUnavailable as exc:
            log.warning("sweep skipped: %s", exc)
        except Exception:
            log.exception("sweep failed")
        await asyncio.sleep(interval)
