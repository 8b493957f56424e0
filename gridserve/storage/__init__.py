"""Storages: where files live. The handlers know only :class:`Storage`."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

from gridserve.masking import mask_uri
from gridserve.storage.base import (
    CorruptFile,
    FileExists,
    FileInfo,
    FileNotFound,
    InsufficientStorage,
    InvalidKey,
    Storage,
    StorageError,
    StorageUnavailable,
)
from gridserve.storage.fallback import FallbackStorage
from gridserve.storage.gridfs import GridFSStorage
from gridserve.storage.local import LocalStorage

__all__ = [
    "CorruptFile",
    "FallbackStorage",
    "FileExists",
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
    "mask_text",
    "mask_uri",
]


class StorageURIError(ValueError):
    """A storage URI that names no storage we can build."""


def from_uri(uri: str, *, bucket: str = "fs", create: bool = True, **options: Any) -> Storage:
    """Builds the storage a URI names; what it needs beyond the URI goes in the URI's query.

    - ``mongodb://...`` or ``mongodb+srv://...``: GridFS in the URI's database, bucket
      ``?bucket=NAME`` (else ``bucket``); other query options are the driver's.
      ``file_cache_seconds`` goes to :class:`GridFSStorage`, other ``options`` to
      ``AsyncMongoClient``.
    - ``file:PATH``, ``file://PATH`` or a plain path: :class:`LocalStorage`; a missing
      directory is created with ``create`` (the default), else a :class:`StorageURIError`.
    - ``s3://[KEY:SECRET@]bucket/prefix?endpoint=URL&region=NAME``:
      :class:`~gridserve.storage.s3.S3Storage`; ``options`` go to aiobotocore's client
      (``endpoint_url``, ``region_name``, ...; the query wins), credentials come from the
      URI's user info, else the standard AWS chain.

    Raises :class:`StorageURIError` for anything else (its message never shows a secret).
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

        base, query = _split_query(uri)
        bucket = query.pop("bucket", bucket)
        if not bucket:
            raise StorageURIError("empty ?bucket= in a mongodb:// URI")
        if query:
            base += "?" + urlencode(query, safe=",:/")
        try:
            return GridFSStorage.from_uri(base, bucket, **options)
        except (InvalidURI, ConfigurationError, ValueError) as exc:
            raise StorageURIError(f"invalid MongoDB URI: {mask_text(str(exc), uri)}") from exc
    if scheme == "s3":
        base, query = _split_query(uri)
        userinfo, at, location = base[len("s3://") :].rpartition("@")
        bucket_name, _, prefix = location.partition("/")
        if not bucket_name:
            raise StorageURIError("an s3:// URI needs a bucket: s3://bucket/prefix")
        if at:
            key, colon, secret = userinfo.partition(":")
            if not colon:
                raise StorageURIError("s3:// credentials go as KEY:SECRET@bucket")
            options["aws_access_key_id"] = unquote(key)
            options["aws_secret_access_key"] = unquote(secret)
        for name, option in (("endpoint", "endpoint_url"), ("region", "region_name")):
            if name in query:
                options[option] = query.pop(name)
        if query:
            raise StorageURIError(
                f"unknown s3:// URI option(s) {', '.join(sorted(query))}: use endpoint, region"
            )
        from gridserve.storage.s3 import S3Storage

        try:
            return S3Storage(bucket_name, prefix, **options)
        except RuntimeError as exc:
            raise StorageURIError(str(exc)) from exc
    raise StorageURIError(
        f"unsupported storage URI {mask_uri(uri)!r}: "
        "expected mongodb://..., s3://bucket/prefix, file:PATH or a path"
    )


def _split_query(uri: str) -> tuple[str, dict[str, str]]:
    base, _, query = uri.partition("?")
    try:
        return base, dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError as exc:
        raise StorageURIError(f"invalid query in storage URI {mask_uri(uri)!r}") from exc


def mask_text(text: str, uri: str) -> str:
    """``text`` (a driver's message, say) with the secrets of ``uri`` masked wherever they
    appear."""
    _, sep, rest = uri.partition("://")
    userinfo, at, _ = rest.partition("/")[0].rpartition("@")
    if sep and at and ":" in userinfo:
        secret = userinfo.split(":", 1)[1]
        if len(secret) >= 4:  # shorter would mask unrelated text, and is no secret
            text = text.replace(secret, "***").replace(unquote(secret), "***")
    return text.replace(uri, mask_uri(uri))
