"""What an S3 client error means for a storage: a miss, a replaced object, a full backend, an
unreachable service, or nothing of ours (:func:`translate_s3_error`, pure).

A service refuses a write for lack of space with an error code of its own, whatever the HTTP
status it comes with:

- ``QuotaExceeded`` (403): Ceph RADOS Gateway, a user's or a bucket's quota
  (``src/rgw/rgw_http_errors.h``);
- ``XMinioStorageFull`` (507): MinIO, a drive below its free-space threshold;
  ``XMinioAdminBucketQuotaExceeded`` (400): MinIO, a bucket's hard quota (``cmd/api-errors.go``);
- ``InsufficientCapacity``, ``InsufficientStorage``: other S3 servers' names for it;

and any answer with status 507 Insufficient Storage. Those become :class:`InsufficientStorage`
(the client should not retry); any other 5xx stays :class:`StorageUnavailable`.
"""

from __future__ import annotations

from gridserve.storage.base import (
    CorruptFile,
    FileNotFound,
    InsufficientStorage,
    StorageUnavailable,
)

FULL_CODES = frozenset(
    {
        "QuotaExceeded",
        "XMinioStorageFull",
        "XMinioAdminBucketQuotaExceeded",
        "InsufficientCapacity",
        "InsufficientStorage",
    }
)
_S3_STACK = ("aiohttp", "aiobotocore", "botocore")


def translate_s3_error(exc: Exception, key: str) -> Exception:
    """The storage error ``exc``, raised by the S3 client on ``key``, means; ``exc`` itself
    when it is none of ours (an access refusal, the upload's source failing): the caller
    raises what it gets. A missing bucket is a setup error (unavailable), not a missing file.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    original: Exception = exc  # ClientError is untyped: what is returned stays an Exception
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return StorageUnavailable("the S3 bucket does not exist (NoSuchBucket)")
        if code in ("404", "NoSuchKey", "NotFound") or status == 404:
            return FileNotFound(key)
        if code in ("412", "PreconditionFailed") or status == 412:
            return CorruptFile(f"{key}: replaced since it was looked up")
        if code in FULL_CODES or status == 507:
            return InsufficientStorage(f"S3 {code}: {error.get('Message', '')}")
        if status is not None and status >= 500:
            return StorageUnavailable(f"S3 {code}: {error.get('Message', '')}")
        return original
    # Only the S3 stack's own errors mean "unreachable"; anything else (the upload's source
    # failing, say) is not ours to rename.
    if isinstance(exc, BotoCoreError) or type(exc).__module__.split(".")[0] in _S3_STACK:
        return StorageUnavailable(f"S3 unreachable: {exc}")
    return exc
