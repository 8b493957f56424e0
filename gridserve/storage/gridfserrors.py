"""What a MongoDB driver error means for a storage: full (507) or unavailable (503).

Pure: :func:`is_out_of_space` and :func:`storage_error` look at a ``PyMongoError`` only;
:func:`driver_errors` applies them to a block, so every call site of the GridFS storage maps
the driver's errors the same way in one line.

A database refuses a write for lack of space as:

- code 14031 ``OutOfDiskSpace`` (``src/mongo/base/error_codes.yml``): the server's own checks
  of free disk space, and a write to a file that failed with ``ENOSPC``;
- code 8000 ``AtlasError`` whose message says "space quota" (a shared Atlas tier over its
  quota: "you are over your space quota, using 512 MB of 512 MB");
- the text of ``ENOSPC``, "No space left on device", under any other code (WiredTiger's
  ``ENOSPC`` reaches the client as ``UnknownError``, code 8, "... 28: No space left on
  device"; FerretDB's PostgreSQL backend reports "could not extend file ...: No space left on
  device");
- "database or disk is full": SQLite's ``SQLITE_FULL``, as FerretDB's SQLite backend reports it
  (``InternalError``, code 1).

Each may come as the command's error (``OperationFailure``, ``WriteError``), inside a bulk
write's ``writeErrors``, or as a write concern error. A duplicate key
(:class:`~pymongo.errors.DuplicateKeyError`) is never "full": callers that rely on it catch it
before these apply.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any

from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError

from gridserve.storage.base import InsufficientStorage, StorageUnavailable

OUT_OF_DISK_SPACE = 14031
ATLAS_ERROR = 8000
_FULL_TEXTS = ("no space left on device", "database or disk is full")


def _is_full(code: Any, message: Any) -> bool:
    """Whether one reported error (its code and message) says the database is full."""
    text = str(message or "").lower()
    if code == OUT_OF_DISK_SPACE:
        return True
    if code == ATLAS_ERROR and "space quota" in text:
        return True
    return any(full in text for full in _FULL_TEXTS)


def _reported(exc: OperationFailure) -> Iterator[tuple[Any, Any]]:
    """``(code, message)`` of each error a server reply carries: the command's own, each of a
    bulk write's ``writeErrors`` and its write concern errors."""
    details = exc.details if isinstance(exc.details, Mapping) else {}
    yield exc.code, details.get("errmsg") or str(exc)
    for error in details.get("writeErrors") or []:
        if isinstance(error, Mapping):
            yield error.get("code"), error.get("errmsg")
    concern = details.get("writeConcernErrors") or []
    if isinstance(details.get("writeConcernError"), Mapping):
        concern = [details["writeConcernError"], *concern]
    for error in concern:
        if isinstance(error, Mapping):
            yield error.get("code"), error.get("errmsg")


def is_out_of_space(exc: BaseException) -> bool:
    """Whether ``exc``, a driver error, is the database refusing a write for lack of space
    (disk or quota: see the module docstring). False for anything else, a duplicate key
    included."""
    if not isinstance(exc, OperationFailure) or isinstance(exc, DuplicateKeyError):
        return False
    return any(_is_full(code, message) for code, message in _reported(exc))


def storage_error(exc: PyMongoError, context: str = "") -> InsufficientStorage | StorageUnavailable:
    """The storage error ``exc`` means: :class:`InsufficientStorage` when the database is full
    (507: the client should not retry), else :class:`StorageUnavailable` (503: retry later).
    Its text is ``exc``'s, after ``context`` and ": " when ``context`` is given."""
    text = f"{context}: {exc}" if context else str(exc)
    if is_out_of_space(exc):
        return InsufficientStorage(text)
    return StorageUnavailable(text)


class driver_errors:
    """A block whose ``PyMongoError`` becomes :func:`storage_error` (raised from it); every
    other exception passes unchanged. (A class, not a ``@contextmanager`` generator: it guards
    every read of a file, and costs a third of one.)"""

    __slots__ = ("context",)

    def __init__(self, context: str = "") -> None:
        self.context = context

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(exc, PyMongoError):
            raise storage_error(exc, self.context) from exc
