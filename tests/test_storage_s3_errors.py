"""What an S3 client error means for the S3 storage (gridserve.storage.s3errors): real
botocore exception objects, built as botocore builds them from a service's answer."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from gridserve.storage.base import (
    CorruptFile,
    FileNotFound,
    InsufficientStorage,
    StorageUnavailable,
)
from gridserve.storage.s3errors import translate_s3_error


def answer(code: str, status: int, message: str = "", operation: str = "PutObject") -> ClientError:
    """The ClientError botocore raises for an error answer with ``code`` and ``status``."""
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


@pytest.mark.parametrize(
    ("code", "status", "message"),
    [
        ("QuotaExceeded", 403, ""),  # Ceph RGW: user or bucket quota
        (
            "XMinioStorageFull",
            507,
            "Storage backend has reached its minimum free drive threshold.",
        ),
        ("XMinioAdminBucketQuotaExceeded", 400, "Bucket quota exceeded"),
        ("InsufficientCapacity", 507, "Insufficient capacity."),
        ("InsufficientStorage", 507, ""),
        ("SomethingElse", 507, "a 507 under a name we do not know"),
    ],
)
def test_a_full_or_over_quota_service_is_insufficient_storage(
    code: str, status: int, message: str
) -> None:
    error = translate_s3_error(answer(code, status, message, "UploadPart"), "a.webm")
    assert type(error) is InsufficientStorage
    assert str(error) == f"S3 {code}: {message}"


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("InternalError", 500, StorageUnavailable),
        ("SlowDown", 503, StorageUnavailable),
        ("NoSuchBucket", 404, StorageUnavailable),
        ("NoSuchKey", 404, FileNotFound),
        ("404", 404, FileNotFound),
        ("PreconditionFailed", 412, CorruptFile),
    ],
)
def test_other_answers_keep_their_meaning(code: str, status: int, kind: type) -> None:
    assert type(translate_s3_error(answer(code, status), "a.webm")) is kind


def test_a_refusal_that_is_not_ours_is_returned_as_it_is() -> None:
    for exc in (answer("AccessDenied", 403), answer("EntityTooLarge", 400), ValueError("x")):
        assert translate_s3_error(exc, "a.webm") is exc


def test_an_unreachable_endpoint_is_unavailable() -> None:
    exc = EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
    assert type(translate_s3_error(exc, "a.webm")) is StorageUnavailable
