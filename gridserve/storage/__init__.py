"""Storages: where files live. The handlers know only :class:`Storage`."""

from __future__ import annotations

from typing import Any

from gridserve.masking import mask_uri
from gridserve.storage.base import (
    CorruptFile,
    FileInfo,
    FileNotFound,
    InsufficientStorage,
    InvalidKey,
    Storage,
    StorageError,
    StorageUnavailable,
)
from gridserve.storage.gridfs import GridFSStorage
from gridserve.storage.local import LocalStorage

__all__ = [
    "CorruptFile",
    "FileInfo",
    "FileNotFound",
    "GridFSStorage",
    "InsufficientStorage",
    "InvalidKey",
    "LocalStorage",
    "Storage",
    "StorageError",
    "StorageURIError",
    "StorageUnavailable",
    "from_uri",
    "mask_uri",
]


class StorageURIError(ValueError):
    """A storage URI that names no storage we can build."""


def from_uri(uri: str, *, bucket: str = "fs", create: bool = True, **options: Any) -> Storage:
    """Builds the storage a URI names.

    - ``mongodb://...`` or ``mongodb+srv://...``: GridFS in the URI's database, bucket
      ``bucket``; ``file_cache_seconds`` goes to :class:`GridFSStorage`, other ``options`` to
      ``AsyncMongoClient``.
    - ``file:PATH``, ``file://PATH`` or a plain path: :class:`LocalStorage`; a missing
      directory is created with ``create`` (the default), else a :class:`StorageURIError`.
    - ``s3://bucket/prefix``: :class:`~gridserve.storage.s3.S3Storage`; ``options`` go to
      aiobotocore's client (``endpoint_url``, ``region_name``, ...), credentials come from the
      standard AWS chain unless given.

    Raises :class:`StorageURIError` for anything else.
    """
    scheme = uri.partition("://")[0].lower() if "://" in uri else ""
    if not scheme or scheme == "file" or uri.startswith("file:"):
        path = uri.removeprefix("file://") if scheme == "file" else uri.removeprefix("file:")
        if not path:
            raise StorageURIError("empty path for a local storage")
        try:
            return LocalStorage(path, create=create)
        except FileNotFoundError:
            raise StorageURIError(
                f"no directory {path!r} (--create makes it; check the path for a typo)"
            ) from None
        except OSError as exc:
            raise StorageURIError(f"cannot use {path!r} as a local storage: {exc}") from exc
    if scheme in ("mongodb", "mongodb+srv"):
        from pymongo.errors import ConfigurationError, InvalidURI

        try:
            return GridFSStorage.from_uri(uri, bucket, **options)
        except (InvalidURI, ConfigurationError, ValueError) as exc:
            raise StorageURIError(f"invalid MongoDB URI: {exc}") from exc
    if scheme == "s3":
        bucket_name, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket_name:
            raise StorageURIError("an s3:// URI needs a bucket: s3://bucket/prefix")
        from gridserve.storage.s3 import S3Storage

        try:
            return S3Storage(bucket_name, prefix, **options)
        except RuntimeError as exc:
            raise StorageURIError(str(exc)) from exc
    raise StorageURIError(
        f"unsupported storage URI {mask_uri(uri)!r}: "
        "expected mongodb://..., s3://bucket/prefix, file:PATH or a path"
    )
