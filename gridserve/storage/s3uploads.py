"""Resumable uploads (tus) into S3: the partial-upload half of
:class:`~gridserve.storage.s3.S3Storage` (contract: "Resumable uploads" in
:mod:`gridserve.storage.base`).

Everything an upload keeps lives under the storage's private ``PREFIX/.gridserve/`` (no key
there resolves, is listed or can be written by an upload):

``.gridserve/uploads/<id>.json``
    The state: name, length, offset, owner, metadata, expiry, head, the part size, the id of
    the multipart upload and the ETags of its parts. Rewritten (one small ``PutObject``) at the
    end of every append: that write is the append's commit point. ``expired_uploads`` lists
    these objects.
``.gridserve/upload-data/<id>/staging``
    The key of the upload's S3 multipart upload, created at the first full part. Every part
    is exactly the upload's part size (``part_size``, at least 5 MiB; larger when a known
    length needs it to fit in 10,000 parts); only the last may be smaller.
``.gridserve/upload-data/<id>/tail-<offset>-<generation>``
    The tail: the bytes after the last full part (less than a part), a plain object named by
    the offset it ends at and the commit that wrote it (a random token, new at every append).
    The next append reads it back in front of its bytes. A tail never changes in place, so a
    crash between writing the new tail and the state leaves the state naming an intact old
    one (the stray new one goes with the upload's other objects), and a state always names the
    tail its own append wrote. Each append rewrites the tail: less than a part per request.

**Completion** (a private staging key copied onto the file's key, the digests):
:mod:`gridserve.storage.s3complete`.

**Appends.** The bytes stream into parts of ``part_size`` (one part in memory at a time, as
``save`` does), numbered after the recorded ones; the state is written last. Bytes of an
append that is not committed (checksum mismatch, a crash) may have been sent as parts with
numbers past the recorded ones: they are never named at completion (the next append overwrites
them), so they are never part of a file; S3 frees parts a completion does not name, an abort
frees all. With a checksum the parts and tail of a failed append are dropped (the state is
not rewritten, a new multipart upload is aborted). Without one, when ``chunks`` fails
(client gone), what arrived is committed before the error is re-raised.

**Locks.** One append, completion or termination of an upload at a time per host: a set in
the process plus an ``flock`` on ``<lock_dir>/<storage digest>-<id>.lock``, never waited
for (:class:`UploadLocked`). S3 has no lock of its own, so appends to one upload from two hosts
at once are not excluded (the README: route an upload's requests to one host, or use GridFS).
Their bytes are still never mixed in a file: the last state written names its own tail and the
ETags of its own parts, and S3 refuses a completion naming a part another append overwrote
(``InvalidPart``: :class:`CorruptFile`, the upload is then only good for terminating).
"""

from __future__ import annotations

import abc
import builtins
import contextlib
import secrets
from collections.abc import AsyncIterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from gridserve.storage.base import (
    CorruptFile,
    FileNotFound,
    InvalidKey,
    Storage,
    utc,
)
from gridserve.storage.resumable import (
    HEAD_BYTES,
    Checksum,
    ChecksumMismatch,
    RunningDigests,
    UploadConflict,
    UploadNotFound,
    UploadState,
    check_append,
    new_upload,
)
from gridserve.storage.s3uploadstate import (
    MAX_PARTS,
    UPLOAD_DATA,
    UPLOAD_ID,
    UPLOADS,
    HostLocks,
    UploadRecord,
    part_size_for,
)
from gridserve.storage.writes import Cleanups, settle


class S3Uploads(Storage, abc.ABC):
    """Resumable uploads for :class:`~gridserve.storage.s3.S3Storage` (see the module doc)."""

    bucket: str
    prefix: str
    part_size: int
    cleanups: Cleanups
    upload_locks: HostLocks
    running_digests: RunningDigests

    @abc.abstractmethod
    async def _s3(self) -> Any: ...

    @abc.abstractmethod
    def _object_key(self, key: str) -> str: ...

    @staticmethod
    @abc.abstractmethod
    def _translate(exc: Exception, key: str) -> Exception: ...

    @contextlib.contextmanager
    def _working_on(self, upload_id: str) -> Iterator[None]:
        """Holds the upload's lock (UploadLocked if taken) and counts as a write in flight,
        which ``close`` waits for (bounded) before it closes the client."""
        with self.upload_locks.hold(upload_id):
            self.cleanups.save_started()
            try:
                yield
            finally:
                self.cleanups.save_ended()

    # -- keys and records -------------------------------------------------------------------

    def _state_key(self, upload_id: str) -> str:
        return f"{self.prefix}{UPLOADS}{upload_id}.json"

    def _data_key(self, upload_id: str, name: str = "") -> str:
        return f"{self.prefix}{UPLOAD_DATA}{upload_id}/{name}"

    def _tail_key(self, record: UploadRecord) -> str:
        return self._data_key(record.state.id, record.tail_name)

    async def _call(self, what: str, operation: str, **request: Any) -> Any:
        """One S3 call with the storage's error translation (a missing key: FileNotFound)."""
        try:
            return await getattr(await self._s3(), operation)(Bucket=self.bucket, **request)
        except Exception as exc:
            raise self._translate(exc, what) from exc

    async def _get(self, key: str, what: str) -> bytes:
        response = await self._call(what, "get_object", Key=key)
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data

    async def _load(self, upload_id: str) -> UploadRecord:
        if not UPLOAD_ID.fullmatch(upload_id):
            raise UploadNotFound(upload_id)
        try:
            data = await self._get(self._state_key(upload_id), upload_id)
        except FileNotFound as exc:
            raise UploadNotFound(upload_id) from exc
        return UploadRecord.from_json(upload_id, data)

    async def _save_record(self, record: UploadRecord) -> None:
        await self._call(
            record.state.id,
            "put_object",
            Key=self._state_key(record.state.id),
            Body=record.to_json(),
            ContentType="application/json",
        )

    async def _send_part(
        self, upload_id: str, multipart: str | None, number: int, data: bytes
    ) -> str:
        part = await self._call(
            upload_id,
            "upload_part",
            Key=self._data_key(upload_id, "staging"),
            UploadId=multipart,
            PartNumber=number,
            Body=data,
        )
        return str(part["ETag"])

    # -- the operations ---------------------------------------------------------------------

    async def begin_upload(
        self,
        name: str,
        *,
        length: int | None,
        owner: str,
        metadata: Mapping[str, str],
        expires_at: datetime,
    ) -> UploadState:
        try:
            self._object_key(name)
        except FileNotFound as exc:  # a reserved name: never a file
            raise InvalidKey(f"{name!r} cannot name a file") from exc
        state = new_upload(
            name, length=length, owner=owner, metadata=metadata, expires_at=expires_at
        )
        await self._save_record(UploadRecord(state, part_size_for(length, self.part_size)))
        return state

    async def upload_state(self, upload_id: str) -> UploadState:
        return (await self._load(upload_id)).state

    async def append_upload(
        self,
        upload_id: str,
        offset: int,
        chunks: AsyncIterable[bytes],
        *,
        length: int | None = None,
        checksum: Checksum | None = None,
        expires_at: datetime | None = None,
    ) -> UploadState:
        if not UPLOAD_ID.fullmatch(upload_id):
            raise UploadNotFound(upload_id)
        with self._working_on(upload_id):
            record = await self._load(upload_id)
            state = record.state
            check_append(state, offset, length)
            if length is not None and length > record.part_size * MAX_PARTS:
                raise UploadConflict(f"{length} bytes is more than this upload can take")
            changed = (length is not None and length != state.length) or (
                expires_at is not None and utc(expires_at) != state.expires_at
            )
            if length is not None:
                state.length = length
            if expires_at is not None:
                state.expires_at = utc(expires_at)
            await self._append(record, chunks, checksum, changed)
            return state

    async def _append(
        self,
        record: UploadRecord,
        chunks: AsyncIterable[bytes],
        checksum: Checksum | None,
        changed: bool,
    ) -> None:
        """Streams ``chunks`` into parts and a new tail, then stores ``record`` updated (also
        when only ``changed``: a new length or expiry). Raises what ``chunks`` raised (after
        committing what arrived), ChecksumMismatch, UploadConflict."""
        state = record.state
        old_tail = self._tail_key(record) if record.tail_length else None
        buffer = bytearray()
        if old_tail is not None:
            buffer += await self._get(old_tail, state.id)
            if len(buffer) != record.tail_length:
                raise CorruptFile(f"upload {state.id}: its tail is {len(buffer)} bytes")
        digests = self.running_digests.at(record.digests_key, state.offset)
        self.running_digests.forget(record.digests_key)  # stored again under the new commit
        hasher: Any = checksum.hasher() if checksum is not None else None
        limit = state.length if state.length is not None else record.part_size * MAX_PARTS
        head = bytearray(state.head)
        parts = builtins.list(record.parts)
        multipart = record.multipart
        received = 0
        failure: BaseException | None = None
        try:
            async for piece in chunks:
                room = limit - state.offset - received
                if len(piece) > room:
                    piece = piece[:room]
                    failure = UploadConflict(f"bytes past the upload's length {limit}")
                if hasher is not None:
                    hasher.update(piece)
                if digests is not None:
                    digests.update(piece)
                if len(head) < HEAD_BYTES:
                    head += piece[: HEAD_BYTES - len(head)]
                buffer += piece
                received += len(piece)
                while len(buffer) >= record.part_size:
                    if multipart is None:
                        multipart = await self._start_multipart(state.id)
                    with memoryview(buffer) as view:  # one copy of the part, not two
                        part = bytes(view[: record.part_size])
                    parts.append(
                        await settle(self._send_part(state.id, multipart, len(parts) + 1, part))
                    )
                    del buffer[: record.part_size]
                if failure is not None:
                    break
        except BaseException as exc:  # the client went away, or a part failed
            failure = exc
        if (
            checksum is not None
            and hasher is not None
            and (failure is not None or hasher.digest() != checksum.digest)
        ):
            if multipart is not None and record.multipart is None:
                await self._abort(state.id, multipart)
            if failure is not None:
                raise failure
            raise ChecksumMismatch(f"upload {state.id}: the bytes do not match the checksum")
        if received:
            record.multipart = multipart
            record.parts = parts
            state.offset += received
            state.head = bytes(head)
            record.generation = secrets.token_urlsafe(9)
            if buffer:
                tail = self._tail_key(record)
                await settle(self._call(state.id, "put_object", Key=tail, Body=bytes(buffer)))
        if received or changed:
            await settle(self._save_record(record))  # the commit point
        if received:
            if digests is not None:
                self.running_digests.store(record.digests_key, state.offset, digests)
            if old_tail is not None:
                with contextlib.suppress(Exception):
                    await self._call(state.id, "delete_object", Key=old_tail)
        if failure is not None:
            raise failure

    async def _start_multipart(self, upload_id: str) -> str:
        created = await settle(
            self._call(
                upload_id, "create_multipart_upload", Key=self._data_key(upload_id, "staging")
            )
        )
        return str(created["UploadId"])

    async def _abort(self, upload_id: str, multipart: str) -> None:
        async def abort() -> None:
            with contextlib.suppress(FileNotFound, CorruptFile):  # NoSuchUpload: gone already
                await self._call(
                    upload_id,
                    "abort_multipart_upload",
                    Key=self._data_key(upload_id, "staging"),
                    UploadId=multipart,
                )

        await self.cleanups.run(abort)

    async def terminate_upload(self, upload_id: str) -> None:
        if not UPLOAD_ID.fullmatch(upload_id):
            raise UploadNotFound(upload_id)
        with self._working_on(upload_id):
            try:
                record: UploadRecord | None = await self._load(upload_id)
            except CorruptFile:
                record = None  # still removed, whole
            await self._remove(upload_id, record.multipart if record else None)
            if record is not None:
                self.running_digests.forget(record.digests_key)

    async def _remove(self, upload_id: str, multipart: str | None) -> None:
        """Aborts the upload's multipart uploads (the recorded one and any a crash left
        unrecorded), deletes its data objects, then its state (last: until then a sweep finds
        it again)."""
        base = self._data_key(upload_id)
        staging = self._data_key(upload_id, "staging")
        s3 = await self._s3()
        try:
            listed = await s3.list_multipart_uploads(Bucket=self.bucket, Prefix=base)
            found = {u["UploadId"] for u in listed.get("Uploads") or [] if u["Key"] == staging}
        except Exception as exc:
            raise self._translate(exc, upload_id) from exc
        for started in found | ({multipart} if multipart else set()):
            await self._abort(upload_id, started)
        keys: builtins.list[str] = []
        try:
            async for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base
            ):
                keys += [entry["Key"] for entry in page.get("Contents", [])]
        except Exception as exc:
            raise self._translate(exc, upload_id) from exc
        for key in keys:
            await settle(self._call(upload_id, "delete_object", Key=key))
        await settle(self._call(upload_id, "delete_object", Key=self._state_key(upload_id)))

    async def expired_uploads(self, now: datetime, limit: int = 1000) -> builtins.list[UploadState]:
        now = utc(now)
        found: builtins.list[UploadState] = []
        base = self.prefix + UPLOADS
        try:
            paginator = (await self._s3()).get_paginator("list_objects_v2")
            pages = [page async for page in paginator.paginate(Bucket=self.bucket, Prefix=base)]
        except Exception as exc:
            raise self._translate(exc, base) from exc
        for page in pages:
            for entry in page.get("Contents", []):
                upload_id = entry["Key"][len(base) :].removesuffix(".json")
                if not UPLOAD_ID.fullmatch(upload_id) or not entry["Key"].endswith(".json"):
                    continue
                try:
                    state = (await self._load(upload_id)).state
                except UploadNotFound:
                    continue  # completed or terminated meanwhile
                except CorruptFile:  # unreadable: expired, so the sweep removes it
                    modified = utc(entry["LastModified"])
                    state = UploadState(upload_id, "", None, 0, modified, modified)
                if state.expires_at < now:
                    found.append(state)
                    if len(found) >= limit:
                        return found
        return found
