"""Completion of a resumable upload into S3: the last step of
:class:`~gridserve.storage.s3uploads.S3Uploads` (layout, appends, locks: that module).

**Why a private staging key and a copy at completion.** A file must appear under its name
with the user metadata ``save`` stores (``md5``, ``sha256``, the JSON metadata) and its content
type, but S3 fixes an object's metadata at ``CreateMultipartUpload``, when no digest is known.
So the parts go to the private staging key; completion completes that multipart upload there,
then copies the staged object server-side onto the file's key with the metadata
(``CopyObject`` with ``MetadataDirective=REPLACE``; above 5 GiB, the copy limit, a multipart
copy of ``UploadPartCopy`` ranges), which is atomic: the file appears whole or not at all, and
replaces an older one of the name. Then the staging, tails and state are deleted. The copy
costs a server-side pass over the bytes and nothing through gridserve. An upload smaller than
a part never starts a multipart upload: completion is one ``PutObject`` of the tail.

**Digests.** md5/sha256 come from :class:`RunningDigests` when this process made every
commit up to the stored one (the usual case; keyed by the commit's generation, so digests of a
commit another host overwrote are never used); otherwise completion reads the staged object
back once (parts cannot be read before the multipart upload is completed), after completing it
and before the copy. An interrupted completion resumes where it stopped (``staged``).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping
from typing import Any

from gridserve.mediatypes import is_valid_media_type
from gridserve.storage.base import CorruptFile, FileInfo, FileNotFound, UploadDigests
from gridserve.storage.resumable import UploadConflict, UploadNotFound
from gridserve.storage.s3uploads import S3Uploads
from gridserve.storage.s3uploadstate import MAX_PARTS, UPLOAD_ID, UploadRecord
from gridserve.storage.writes import settle

COPY_LIMIT = 5 * 1024**3  # CopyObject's largest source; above it, a multipart copy
READ_BLOCK = 1024 * 1024


class S3Completion(S3Uploads):
    """:meth:`complete_upload` for :class:`~gridserve.storage.s3.S3Storage`."""

    copy_limit: int = COPY_LIMIT

    async def complete_upload(
        self,
        upload_id: str,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> FileInfo:
        if not UPLOAD_ID.fullmatch(upload_id):
            raise UploadNotFound(upload_id)
        with self._working_on(upload_id):
            record = await self._load(upload_id)
            state = record.state
            if not state.complete:
                raise UploadConflict(f"upload {upload_id} is at {state.offset} of {state.length}")
            final = self._object_key(name or state.name)
            extra: dict[str, Any] = {
                "Metadata": {"gridserve": json.dumps(dict(metadata or {}), separators=(",", ":"))}
            }
            if content_type and is_valid_media_type(content_type):
                extra["ContentType"] = content_type
            if record.multipart is None:  # smaller than a part: all of it is the tail
                data = await self._get(self._tail_key(record), upload_id) if state.offset else b""
                if len(data) != state.offset:
                    raise CorruptFile(f"upload {upload_id}: its tail is {len(data)} bytes")
                digests = UploadDigests()
                digests.update(data)
                extra["Metadata"].update(md5=digests.md5, sha256=digests.sha256)
                await settle(self._call(upload_id, "put_object", Key=final, Body=data, **extra))
            else:
                resumed = record.staged
                if not resumed:
                    await self._stage(record)
                try:
                    digests = self.running_digests.at(record.digests_key, state.offset) or (
                        await self._read_digests(upload_id)
                    )
                    extra["Metadata"].update(md5=digests.md5, sha256=digests.sha256)
                    await settle(self._copy(upload_id, final, state.offset, extra))
                except FileNotFound as exc:
                    if not resumed:
                        raise
                    # An earlier completion copied it and stopped while it cleaned up.
                    await self._remove(upload_id, None)
                    raise UploadNotFound(upload_id) from exc
            await self._remove(upload_id, record.multipart if not record.staged else None)
            self.running_digests.forget(record.digests_key)
        return await self.resolve(name or state.name)

    async def _stage(self, record: UploadRecord) -> None:
        """Sends the tail as the last part and completes the multipart upload onto the
        staging key; records it (``staged``)."""
        state = record.state
        parts = [{"PartNumber": n + 1, "ETag": etag} for n, etag in enumerate(record.parts)]
        if record.tail_length:
            tail = await self._get(self._tail_key(record), state.id)
            etag = await settle(self._send_part(state.id, record.multipart, len(parts) + 1, tail))
            parts.append({"PartNumber": len(parts) + 1, "ETag": etag})
        staging = self._data_key(state.id, "staging")
        try:
            await settle(
                self._call(
                    state.id,
                    "complete_multipart_upload",
                    Key=staging,
                    UploadId=record.multipart,
                    MultipartUpload={"Parts": parts},
                )
            )
        except FileNotFound as exc:
            # Completed by an earlier attempt that stopped before it recorded it?
            try:
                head = await self._call(state.id, "head_object", Key=staging)
            except FileNotFound:
                raise CorruptFile(f"upload {state.id}: its multipart upload is gone") from exc
            if int(head["ContentLength"]) != state.offset:
                raise CorruptFile(
                    f"upload {state.id}: staged {head['ContentLength']} bytes"
                ) from exc
        except Exception as exc:
            if "InvalidPart" not in str(exc):
                raise
            # A part's ETag is not the one recorded: it was overwritten by an append of another
            # host to the same offset (no lock spans hosts). Never a file of mixed bytes.
            raise CorruptFile(f"upload {state.id}: a part was overwritten") from exc
        record.staged = True
        await settle(self._save_record(record))

    async def _read_digests(self, upload_id: str) -> UploadDigests:
        """md5 + sha256 of the staged object, read back (another process took part)."""
        digests = UploadDigests()
        response = await self._call(
            upload_id, "get_object", Key=self._data_key(upload_id, "staging")
        )
        async with response["Body"] as body:
            async for block in body.iter_chunks(READ_BLOCK):
                digests.update(block)
        return digests

    async def _copy(self, upload_id: str, final: str, length: int, extra: dict[str, Any]) -> None:
        """Copies the staged object onto ``final`` with the file's metadata, server-side."""
        source = {"Bucket": self.bucket, "Key": self._data_key(upload_id, "staging")}
        if length <= self.copy_limit:
            await self._call(
                upload_id,
                "copy_object",
                Key=final,
                CopySource=source,
                MetadataDirective="REPLACE",
                **extra,
            )
            return
        created = await self._call(upload_id, "create_multipart_upload", Key=final, **extra)
        copy_id = created["UploadId"]
        piece = min(max(self.part_size, math.ceil(length / MAX_PARTS)), self.copy_limit)
        parts = []
        try:
            for number, start in enumerate(range(0, length, piece), start=1):
                stop = min(start + piece, length) - 1
                copied = await self._call(
                    upload_id,
                    "upload_part_copy",
                    Key=final,
                    UploadId=copy_id,
                    PartNumber=number,
                    CopySource=source,
                    CopySourceRange=f"bytes={start}-{stop}",
                )
                parts.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
            await self._call(
                upload_id,
                "complete_multipart_upload",
                Key=final,
                UploadId=copy_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:

            async def abort() -> None:
                with contextlib.suppress(Exception):
                    await self._call(
                        upload_id, "abort_multipart_upload", Key=final, UploadId=copy_id
                    )

            await self.cleanups.run(abort)
            raise
