"""What the completion of a tus upload decides, apart from HTTP: the type it is stored as,
the name it is stored under, and the answer for an append or completion that failed.
Used by :mod:`gridserve.handlers.tus`."""

from __future__ import annotations

import logging

from gridserve import tus
from gridserve.handlers.files import free_name, name_exists, upload_failure_answer
from gridserve.storage.base import Storage
from gridserve.storage.resumable import (
    ChecksumMismatch,
    UploadConflict,
    UploadLocked,
    UploadNotFound,
    UploadState,
)
from gridserve.uploads import Rejected, UploadPolicy, decide_content_type, sanitize_name, sniff

log = logging.getLogger("gridserve.tus")


def failure_answer(exc: BaseException) -> tuple[int, str] | None:
    """The status and reason for an append or completion that failed with ``exc``: tus's own
    (404, 409, 423, 460), then what every upload path answers
    (:func:`~gridserve.handlers.files.upload_failure_answer`); None for a bug (a 500)."""
    if isinstance(exc, tus.TusError):
        return exc.status, exc.reason
    if isinstance(exc, UploadNotFound):
        return 404, "Not Found"
    if isinstance(exc, UploadConflict):
        return 409, str(exc) or "Conflict"
    if isinstance(exc, UploadLocked):
        return 423, "Locked: another request is appending to this upload"
    if isinstance(exc, ChecksumMismatch):
        return tus.CHECKSUM_MISMATCH, "Checksum Mismatch"
    return upload_failure_answer(exc, log)


def content_type_of(state: UploadState, head: bytes | None = None) -> str:
    """What the upload is stored as: what ``PUT`` decides from the declared type
    (``filetype``), the first bytes (``head``, by default the stored ``state.head``) and the
    name."""
    first = state.head if head is None else head
    return decide_content_type(state.metadata.get("filetype"), sniff(first), state.name)


async def completion_name(storage: Storage, policy: UploadPolicy, state: UploadState) -> str:
    """The name the finished upload ``state`` is stored under. With ``on_conflict``
    ``reject`` or ``rename`` its name was free at creation; a file stored under it since (a
    ``PUT``, another upload) is never overwritten nor given a revision: ``rename`` picks the
    first free name now, from the name asked for (as ``PUT`` would have), ``reject`` raises
    :class:`~gridserve.uploads.Rejected` 409 (so does ``rename`` past 1000 copies)."""
    if policy.on_conflict == "revision" or not await name_exists(storage, state.name):
        return state.name
    if policy.on_conflict == "reject":
        raise Rejected(409, f"{state.name} was stored by another request during this upload")
    requested = state.metadata.get("filename")
    try:
        original = sanitize_name(requested) if requested else state.name
    except Rejected:
        original = state.name
    return await free_name(storage, policy, original)
