"""S3 storage: objects in a bucket (under an optional key prefix) of any S3-compatible service.

Built on aiobotocore (``pip install gridserve[s3]``), so credentials, region and profiles come
from the standard AWS chain (environment, ``~/.aws/config``, instance roles) unless given.
Checksums are sent only when an operation requires them, which keeps MinIO, Ceph, R2 and
s3proxy working with current botocore.

- A range read is one ranged ``GetObject`` with ``If-Match`` on the ETag seen at lookup, so an
  object replaced between lookup and read is detected, never spliced.
- ETag and Last-Modified come from the object. Uploads that fit in one part (``part_size``,
  8 MiB) are a single ``PutObject`` that also stores ``md5``/``sha256`` in the object's user
  metadata (so the ETag is the MD5, as on the other backends); larger ones stream as a
  multipart upload holding one part in memory at a time, aborted on any failure, so nothing is
  left behind, and keep S3's multipart ETag (digests would need a server-side copy).
- Revisions: the newest only (``rev`` ``-1`` and ``0`` name it), as on local disk.
- Keys ending in ``/`` (directory placeholders some services list) are not files.
- Resumable uploads (tus): :mod:`gridserve.storage.s3uploads` (a multipart upload on a private
  staging key) and :mod:`gridserve.storage.s3complete` (copied onto the file's key with its
  digests at completion).
"""

from __future__ import annotations

import builtins
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Hashable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from gridserve.mediatypes import is_valid_media_type
from gridserve.storage.base import (
    CorruptFile,
    Derived,
    FileInfo,
    FileNotFound,
    InvalidKey,
    StorageUnavailable,
    UploadDigests,
    check_key,
    copied_validators,
    stored_content_type,
    utc,
)
from gridserve.storage.resumable import RunningDigests
from gridserve.storage.s3complete import S3Completion
from gridserve.storage.s3errors import translate_s3_error
from gridserve.storage.s3uploadstate import host_locks
from gridserve.storage.writes import Cleanups, settle

DEFAULT_PART_SIZE = 8 * 1024 * 1024
CLOSE_DRAIN_SECONDS = 10.0
READ_BLOCK = 256 * 1024
# What services report for objects stored without a type (s3proxy: application/unknown).
_DEFAULT_TYPES = ("binary/octet-stream", "application/octet-stream", "application/unknown")
_META_KEY = "gridserve"  # x-amz-meta-gridserve: the user metadata, as JSON
# What a copy (save(original=...)) keeps of its original beside the digests: its upload date
# (S3's LastModified is the copy's) and, when no digest carries it, its ETag.
_UPLOAD_DATE = "upload-date"
_KEPT_ETAG = "kept-etag"
# Derived records and posters live under PREFIX/.gridserve/derived/<key>/<name>: a dot segment no
# upload can name, hidden from listings and refused as a key.
_RESERVED = ".gridserve/"
_METADATA_RECORD = "metadata.json"


class S3Storage(S3Completion):
    """Objects of ``bucket`` under ``prefix``. ``client_options`` go to aiobotocore's
    ``create_client`` (``endpoint_url``, ``region_name``, ``aws_access_key_id`` ...).
    ``upload_lock_dir``: where this host's processes lock resumable uploads (default: a
    directory of this storage under the system's temporary directory)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        part_size: int = DEFAULT_PART_SIZE,
        upload_lock_dir: str | None = None,
        **client_options: Any,
    ) -> None:
        try:
            from aiobotocore.config import AioConfig
            from aiobotocore.session import get_session
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError("S3 storage needs aiobotocore: pip install gridserve[s3]") from exc
        if part_size < 5 * 1024 * 1024:
            raise ValueError("S3 multipart parts must be at least 5 MiB")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.part_size = part_size
        self.cleanups = Cleanups()
        identity = f"{client_options.get('endpoint_url')}|{bucket}|{self.prefix}"
        self.upload_locks = host_locks(upload_lock_dir, identity)
        self.running_digests = RunningDigests()
        client_options.setdefault(
            "config",
            AioConfig(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                s3={"addressing_style": "path"} if client_options.get("endpoint_url") else None,
                retries={"max_attempts": 2, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
            ),
        )
        self._client_options = client_options
        self._session = get_session()
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._presigned_origin: str | None = None

    @property
    def description(self) -> str:
        endpoint = self._client_options.get("endpoint_url") or "AWS"
        return f"S3 s3://{self.bucket}/{self.prefix} (endpoint {endpoint})"

    async def _s3(self) -> Any:
        if self._client is None:
            stack = contextlib.AsyncExitStack()
            self._client = await stack.enter_async_context(
                self._session.create_client("s3", **self._client_options)
            )
            self._stack = stack
        return self._client

    def _object_key(self, key: str) -> str:
        check_key(key)
        if key.endswith("/") or key.startswith(_RESERVED):
            raise FileNotFound(key)
        return self.prefix + key

    # -- errors --------------------------------------------------------------------------

    @staticmethod
    def _translate(exc: Exception, key: str) -> Exception:
        return translate_s3_error(exc, key)

    # -- reading -------------------------------------------------------------------------

    def _info(
        self,
        key: str,
        length: int,
        modified: datetime,
        etag: str | None,
        content_type: str | None,
        user_metadata: Mapping[str, str],
    ) -> FileInfo:
        metadata: dict[str, Any] = {}
        with contextlib.suppress(ValueError, TypeError):
            stored = json.loads(user_metadata.get(_META_KEY, "{}"))
            if isinstance(stored, dict):
                metadata = stored
        md5 = user_metadata.get("md5")
        kept_etag = user_metadata.get(_KEPT_ETAG)
        if (
            md5 is None
            and not kept_etag
            and etag
            and len(etag.strip('"')) == 32
            and "-" not in etag
        ):
            md5 = etag.strip('"')  # a single-part object's ETag is its MD5
        if user_metadata.get("sha256"):
            metadata["sha256"] = user_metadata["sha256"]
        with contextlib.suppress(KeyError, ValueError):
            modified = datetime.fromisoformat(user_metadata[_UPLOAD_DATE])
        return FileInfo(
            id=key,
            filename=key,
            length=length,
            upload_date=utc(modified),
            chunk_size=READ_BLOCK,
            content_type=stored_content_type(
                None if content_type in _DEFAULT_TYPES else content_type, metadata
            ),
            md5=md5,
            metadata=metadata,
            native_etag=kept_etag or etag,
            version=etag,
        )

    def cache_key(self, info: FileInfo) -> Hashable | None:
        """The object's ETag names its content (a replacement has another, and reads send
        ``If-Match``); an object listed without one is not cached."""
        if not info.native_etag:
            return None
        return ("s3", self.bucket, self.prefix, info.filename, info.native_etag, info.length)

    async def resolve(self, key: str, revision: int | None = None) -> FileInfo:
        object_key = self._object_key(key)
        if revision not in (None, -1, 0):
            raise FileNotFound(key)
        try:
            head = await (await self._s3()).head_object(Bucket=self.bucket, Key=object_key)
        except Exception as exc:
            raise self._translate(exc, key) from exc
        return self._info(
            key,
            int(head["ContentLength"]),
            head["LastModified"],
            head.get("ETag"),
            head.get("ContentType"),
            head.get("Metadata") or {},
        )

    async def read(
        self, info: FileInfo, start: int = 0, stop: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        stop = info.length if stop is None else min(stop, info.length)
        if start >= stop:
            return
        request: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self._object_key(info.filename),
            "Range": f"bytes={start}-{stop - 1}",
        }
        if info.version or info.native_etag:
            request["IfMatch"] = info.version or info.native_etag
        try:
            response = await (await self._s3()).get_object(**request)
        except Exception as exc:
            error = self._translate(exc, info.filename)
            if isinstance(error, CorruptFile):
                error = await self._deleted_or(error, info)
            raise error from exc
        received = 0
        body = response["Body"]
        try:
            async for block in body.iter_chunks(READ_BLOCK):
                received += len(block)
                yield block
        except (FileNotFound, CorruptFile, StorageUnavailable):
            raise
        except Exception as exc:
            raise self._translate(exc, info.filename) from exc
        finally:
            body.close()
        if received != stop - start:
            raise CorruptFile(f"{info.filename}: got {received} of {stop - start} bytes")

    async def presigned_get_url(
        self, info: FileInfo, expires_in: int, content_type: str, disposition: str
    ) -> str:
        """A presigned ``GetObject`` URL of ``info``'s object, valid ``expires_in`` seconds,
        whose answers carry ``content_type`` and ``disposition`` (``response-content-*``)."""
        params = {
            "Bucket": self.bucket,
            "Key": self._object_key(info.filename),
            "ResponseContentType": content_type,
            "ResponseContentDisposition": disposition,
        }
        client = await self._s3()
        url: str = await client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=expires_in
        )
        return url

    async def presigned_origin(self) -> str:
        """The origin (``scheme://host[:port]``) of this bucket's presigned URLs, for a page's
        Content-Security-Policy; computed once (signing is local: no request is made)."""
        if self._presigned_origin is None:
            client = await self._s3()
            url: str = await client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": "origin"}, ExpiresIn=60
            )
            parts = urlsplit(url)
            self._presigned_origin = f"{parts.scheme}://{parts.netloc}"
        return self._presigned_origin

    async def _deleted_or(self, error: Exception, info: FileInfo) -> Exception:
        """``FileNotFound`` if ``info``'s object is gone, else ``error``. A failed ``If-Match``
        means replaced or deleted (S3 answers 404 for a deleted object, other services 412):
        a ``HeadObject`` tells them apart."""
        try:
            await (await self._s3()).head_object(
                Bucket=self.bucket, Key=self._object_key(info.filename)
            )
        except Exception as exc:
            translated = self._translate(exc, info.filename)
            if isinstance(translated, FileNotFound):
                return translated
        return error

    async def list(
        self, prefix: str = "", limit: int = 100, after: str = ""
    ) -> AsyncIterator[FileInfo]:
        paginator = (await self._s3()).get_paginator("list_objects_v2")
        found = 0
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
        if after:
            request["StartAfter"] = self.prefix + after
        try:
            async for page in paginator.paginate(**request):
                for entry in page.get("Contents", []):
                    key = entry["Key"][len(self.prefix) :]
                    if not key or key.endswith("/") or key.startswith(_RESERVED):
                        continue
                    yield self._info(
                        key, int(entry["Size"]), entry["LastModified"], entry.get("ETag"), None, {}
                    )
                    found += 1
                    if found >= limit:
                        return
        except Exception as exc:
            raise self._translate(exc, prefix) from exc

    async def ping(self) -> None:
        try:
            await (await self._s3()).head_bucket(Bucket=self.bucket)
        except Exception as exc:
            translated = self._translate(exc, self.bucket)
            if isinstance(translated, FileNotFound):
                raise StorageUnavailable(f"bucket {self.bucket} does not exist") from exc
            raise StorageUnavailable(str(translated)) from exc

    # -- writing -------------------------------------------------------------------------

    async def save(
        self,
        name: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        original: FileInfo | None = None,
    ) -> FileInfo:
        object_key = self._object_key(name)
        s3 = await self._s3()
        digests = UploadDigests()
        common: dict[str, Any] = {"Bucket": self.bucket, "Key": object_key}
        if content_type and is_valid_media_type(content_type):  # it travels as a header
            common["ContentType"] = content_type
        user_metadata = {_META_KEY: json.dumps(dict(metadata or {}), separators=(",", ":"))}
        if original is not None:
            # Known before the first byte, so a multipart copy carries them too; checked
            # against the content before the object is completed.
            user_metadata.update(_copy_metadata(original, metadata))
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        self.cleanups.save_started()
        try:
            async for piece in chunks:
                digests.update(piece)
                buffer += piece
                while len(buffer) >= self.part_size:
                    if upload_id is None:
                        # settle: a multipart upload created behind a cancellation is never
                        # aborted otherwise
                        created = await settle(
                            s3.create_multipart_upload(**common, Metadata=user_metadata)
                        )
                        upload_id = created["UploadId"]
                    await settle(self._upload_part(s3, object_key, upload_id, parts, buffer))
            if original is not None:
                copied_validators(original, metadata, digests)  # CorruptFile if it differs
            if upload_id is None:
                if original is None:
                    user_metadata.update(md5=digests.md5, sha256=digests.sha256)
                await s3.put_object(**common, Body=bytes(buffer), Metadata=user_metadata)
            else:
                if buffer:
                    await self._upload_part(s3, object_key, upload_id, parts, buffer)
                await s3.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=object_key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException as exc:
            if upload_id is not None:
                started = upload_id

                async def abort() -> None:
                    with contextlib.suppress(Exception):
                        await s3.abort_multipart_upload(
                            Bucket=self.bucket, Key=object_key, UploadId=started
                        )

                await self.cleanups.run(abort)
            if isinstance(exc, Exception):
                translated = self._translate(exc, name)
                if translated is not exc:
                    raise translated from exc
            raise
        finally:
            self.cleanups.save_ended()
        # What a later lookup will say, so the ETag is the same: digests for a single-part
        # object, S3's own multipart ETag otherwise.
        return await self.resolve(name)

    async def _upload_part(
        self,
        s3: Any,
        key: str,
        upload_id: str,
        parts: builtins.list[dict[str, Any]],
        buffer: bytearray,
    ) -> None:
        """Uploads the next part (at most ``part_size`` bytes taken off ``buffer``)."""
        number = len(parts) + 1
        part = await s3.upload_part(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=bytes(buffer[: self.part_size]),
        )
        parts.append({"ETag": part["ETag"], "PartNumber": number})
        del buffer[: self.part_size]

    async def delete(self, info: FileInfo) -> None:
        await self.resolve(info.filename)  # S3 deletes are idempotent; say when nothing was there
        try:
            await (await self._s3()).delete_object(
                Bucket=self.bucket, Key=self._object_key(info.filename)
            )
        except Exception as exc:
            raise self._translate(exc, info.filename) from exc
        await self.delete_derived(info)

    # -- derived data: records under PREFIX/.gridserve/derived/ ----------------------------

    def _derived_key(self, info: FileInfo, name: str = "") -> str:
        check_key(info.filename)
        if "/" in name or name.startswith("."):
            raise InvalidKey(f"bad derived name {name!r}")
        return f"{self.prefix}{_RESERVED}derived/{info.filename}/{name}"

    async def update_metadata(self, info: FileInfo, patch: Mapping[str, Any]) -> None:
        """A derived JSON record, not a copy of the object: a copy would change its
        Last-Modified and break If-Range for the players reading it."""
        current = await self.get_derived(info, _METADATA_RECORD)
        merged: dict[str, Any] = {}
        if current is not None:
            with contextlib.suppress(ValueError):
                loaded = json.loads(current.data)
                merged = loaded if isinstance(loaded, dict) else {}
        merged.update(patch)
        data = json.dumps(merged, separators=(",", ":")).encode()
        await self.put_derived(info, _METADATA_RECORD, data, "application/json")

    async def media_of(self, info: FileInfo) -> Mapping[str, Any] | None:
        record = await self.get_derived(info, _METADATA_RECORD)
        if record is None:
            return None
        with contextlib.suppress(ValueError):
            media = json.loads(record.data).get("media")
            return media if isinstance(media, dict) else None
        return None

    async def put_derived(self, info: FileInfo, name: str, data: bytes, content_type: str) -> None:
        try:
            await (await self._s3()).put_object(
                Bucket=self.bucket,
                Key=self._derived_key(info, name),
                Body=data,
                ContentType=content_type,
                Metadata={"source": str(info.etag).strip('"')},
            )
        except Exception as exc:
            raise self._translate(exc, info.filename) from exc

    async def get_derived(self, info: FileInfo, name: str) -> Derived | None:
        try:
            response = await (await self._s3()).get_object(
                Bucket=self.bucket, Key=self._derived_key(info, name)
            )
            async with response["Body"] as body:
                data = await body.read()
        except Exception as exc:
            translated = self._translate(exc, info.filename)
            if isinstance(translated, FileNotFound):
                return None
            raise translated from exc
        if (response.get("Metadata") or {}).get("source") != str(info.etag).strip('"'):
            return None
        return Derived(data, response.get("ContentType") or "application/octet-stream")

    async def derived_names(self, info: FileInfo) -> builtins.list[str]:
        base = self._derived_key(info)
        names: builtins.list[str] = []
        try:
            paginator = (await self._s3()).get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
                names += [entry["Key"][len(base) :] for entry in page.get("Contents", [])]
        except Exception as exc:
            raise self._translate(exc, info.filename) from exc
        return [name for name in names if name and "/" not in name]

    async def delete_derived(self, info: FileInfo) -> None:
        base = self._derived_key(info)
        s3 = await self._s3()
        for name in await self.derived_names(info):
            try:
                await s3.delete_object(Bucket=self.bucket, Key=base + name)
            except Exception as exc:
                raise self._translate(exc, info.filename) from exc

    async def close(self) -> None:
        await self.cleanups.drain(CLOSE_DRAIN_SECONDS)  # uploads in flight abort their parts
        if self._stack is not None:
            await self._stack.aclose()
        self._stack, self._client = None, None


def _copy_metadata(original: FileInfo, metadata: Mapping[str, Any] | None) -> dict[str, str]:
    """The user metadata that makes an object a copy of ``original`` (``save(original=...)``):
    its md5 if it had one, its upload date, and its ETag when no digest carries it."""
    kept = dict(original.metadata if metadata is None else metadata)
    extra = {_UPLOAD_DATE: original.upload_date.isoformat()}
    if original.md5:
        extra["md5"] = original.md5.lower()
    elif not any(isinstance(kept.get(k), str) for k in ("sha256", "md5")):
        extra[_KEPT_ETAG] = original.etag.opaque
    return extra
