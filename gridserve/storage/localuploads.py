"""Resumable uploads (tus) on local disk: the part of :class:`~gridserve.storage.local.
LocalStorage` that implements "Resumable uploads" of :mod:`gridserve.storage.base`.

Layout, in the storage's private directory (hidden: never listed, never served as a file)::

    ROOT/.gridserve/uploads/<id>.json   the state: name, length, offset, expiry, owner, metadata
    ROOT/.gridserve/uploads/<id>.bin    the bytes received so far

Each append writes its bytes into ``<id>.bin`` at the stored offset, fsyncs them, and only
then replaces ``<id>.json`` (written beside, in ``.gridserve/tmp``, fsynced, renamed): the
stored offset never counts a byte that is not on disk. Bytes past the stored offset (a crash
between the two) are cut off by the next append. Completion renames ``<id>.bin`` into place
with its sidecar exactly as ``save`` does (so it is atomic and replaces the name), then removes
the state; a crash in between leaves a state whose bytes file is gone, which is not found,
listed as expired once it is, and removed by the sweep.

**Lock.** An append, a completion or a termination holds an ``flock`` on ``<id>.bin`` for its
whole run, taken without waiting (:class:`UploadLocked` when it is held): one writer at a time
among every process of this host, and across hosts on a shared filesystem whose locks work
there (NFSv4; Linux maps ``flock`` to its byte-range locks). After locking, the path must still
name the locked file (a completion or termination may have moved it meanwhile), else the upload
is gone (:class:`UploadNotFound`).

**Digests.** md5 and sha256 come from this process's :class:`RunningDigests` when it saw every
byte, else completion reads the bytes back once (another process appended some).

The upload id is 32 characters of ``secrets.token_urlsafe`` (192 bits); an id of any other
shape is not found without touching the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import re
import tempfile
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from gridserve.storage.base import (
    CorruptFile,
    FileInfo,
    InsufficientStorage,
    InvalidKey,
    StorageUnavailable,
    UploadDigests,
    utc,
)
from gridserve.storage.resumable import (
    HEAD_BYTES,
    Checksum,
    ChecksumMismatch,
    RunningDigests,
    UploadConflict,
    UploadLocked,
    UploadNotFound,
    UploadState,
    check_append,
    new_upload,
)
from gridserve.storage.writes import settle

T = TypeVar("T")
UPLOADS_DIR = "uploads"
READ_BACK_BLOCK = 1024 * 1024
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class LocalUploads:
    """Mixin of :class:`~gridserve.storage.local.LocalStorage`: the resumable-upload methods."""

    if TYPE_CHECKING:
        state: Path
        file_mode: int

        def _relative(self, key: str) -> str: ...
        def _content_path(self, relative: str) -> Path: ...
        def _commit(
            self, tmp: Path, target: Path, relative: str, sidecar: dict[str, Any]
        ) -> FileInfo: ...
        async def _io(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...

    @cached_property
    def _running(self) -> RunningDigests:
        return RunningDigests()

    def _upload_paths(self, upload_id: str) -> tuple[Path, Path]:
        if not isinstance(upload_id, str) or not _ID.fullmatch(upload_id):
            raise UploadNotFound(repr(upload_id)[:80])
        folder = self.state / UPLOADS_DIR
        return folder / f"{upload_id}.json", folder / f"{upload_id}.bin"

    # -- the interface -------------------------------------------------------------------

    async def begin_upload(
        self,
        name: str,
        *,
        length: int | None,
        owner: str,
        metadata: Mapping[str, str],
        expires_at: datetime,
    ) -> UploadState:
        relative = self._relative(name)
        _writable(self._content_path(relative), self.state.parent)  # refused now, not at the end
        state = new_upload(
            relative, length=length, owner=owner, metadata=metadata, expires_at=expires_at
        )
        await _disk(settle(asyncio.to_thread(self._begin_sync, state)))
        return state

    async def upload_state(self, upload_id: str) -> UploadState:
        json_path, bin_path = self._upload_paths(upload_id)
        return await _disk(self._io(self._read_state, json_path, bin_path))

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
        json_path, bin_path = self._upload_paths(upload_id)
        fd = await _disk(self._io(_lock, bin_path))
        try:
            state = await _disk(self._io(self._read_state, json_path, bin_path, with_head=False))
            check_append(state, offset, length)
            if length is not None:
                state.length = length
            if expires_at is not None:
                state.expires_at = utc(expires_at)
            if os.fstat(fd).st_size != offset:
                os.ftruncate(fd, offset)  # bytes a crash left past the stored offset
            return await self._append(fd, json_path, state, chunks, checksum)
        finally:
            os.close(fd)

    async def complete_upload(
        self,
        upload_id: str,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> FileInfo:
        json_path, bin_path = self._upload_paths(upload_id)
        fd = await _disk(self._io(_lock, bin_path))
        try:
            state = await _disk(self._io(self._read_state, json_path, bin_path, with_head=False))
            if state.length is None or not state.complete:
                raise UploadConflict(f"{state.offset} of {state.length} bytes: not complete")
            relative = self._relative(name or state.name)
            target = self._content_path(relative)
            size = os.fstat(fd).st_size
            if size < state.length:
                raise CorruptFile(f"upload {upload_id}: {size} of {state.length} bytes on disk")
            if size > state.length:
                os.ftruncate(fd, state.length)  # a crash's bytes past the end, never counted
            digests = self._running.at(upload_id, state.length)
            if digests is None:
                digests = await _disk(asyncio.to_thread(_digest_file, fd, state.length))
            sidecar = new_sidecar(content_type, metadata, digests)
            (self.state / "tmp").mkdir(parents=True, exist_ok=True)
            info = await _disk(
                settle(asyncio.to_thread(self._commit, bin_path, target, relative, sidecar))
            )
            json_path.unlink(missing_ok=True)
            self._running.forget(upload_id)
            return info
        finally:
            os.close(fd)

    async def terminate_upload(self, upload_id: str) -> None:
        json_path, bin_path = self._upload_paths(upload_id)
        try:
            fd = await _disk(self._io(_lock, bin_path))
        except UploadNotFound:
            if not json_path.exists():
                raise
            json_path.unlink(missing_ok=True)  # a completion's crash left the state only
            return
        try:
            bin_path.unlink(missing_ok=True)
            json_path.unlink(missing_ok=True)
            self._running.forget(upload_id)
        finally:
            os.close(fd)

    async def expired_uploads(self, now: datetime, limit: int = 1000) -> list[UploadState]:
        return await _disk(asyncio.to_thread(self._expired_sync, utc(now), limit))

    # -- on disk -------------------------------------------------------------------------

    async def _append(
        self,
        fd: int,
        json_path: Path,
        state: UploadState,
        chunks: AsyncIterable[bytes],
        checksum: Checksum | None,
    ) -> UploadState:
        start = state.offset
        digests = self._running.at(state.id, start)
        hasher = checksum.hasher() if checksum is not None else None
        position = start
        gone: Exception | None = None
        try:
            iterator = aiter(chunks)
            while True:
                try:
                    piece = await anext(iterator)
                except StopAsyncIteration:
                    break
                except Exception as exc:  # the client went away: what came is kept
                    gone = exc
                    break
                if state.length is not None and position + len(piece) > state.length:
                    raise UploadConflict(f"bytes past the length {state.length}")
                await _disk(settle(self._io(_write_at, fd, piece, position)))
                position += len(piece)
                if digests is not None:
                    digests.update(piece)
                if hasher is not None:
                    hasher.update(piece)
            if hasher is not None and checksum is not None:
                if gone is not None:
                    raise gone  # a checksum covers the whole request: nothing is kept
                if hasher.digest() != checksum.digest:
                    raise ChecksumMismatch(f"{checksum.algorithm} of the bytes does not match")
            state.offset = position
            await _disk(settle(asyncio.to_thread(os.fsync, fd)))
            await _disk(settle(asyncio.to_thread(self._write_state, state)))
        except BaseException as exc:
            # Synchronous on purpose: it must run even while the task is being cancelled.
            cancelled = isinstance(exc, asyncio.CancelledError)
            if cancelled and checksum is None and self._commit_now(fd, state, position):
                self._remember(state.id, position, digests)  # a shutdown keeps what came
                raise
            # Back to the offset stored (a cancelled state write may have landed).
            stored = _load(json_path).get("offset")
            os.ftruncate(fd, stored if isinstance(stored, int) and stored >= start else start)
            raise
        self._remember(state.id, position, digests)
        state.head = os.pread(fd, min(position, HEAD_BYTES), 0)
        if gone is not None:
            raise gone
        return state

    def _commit_now(self, fd: int, state: UploadState, position: int) -> bool:
        """Stores ``position`` as the offset, blocking (the task is being cancelled)."""
        try:
            os.fsync(fd)
            state.offset = position
            self._write_state(state)
        except OSError:
            return False
        return True

    def _remember(self, upload_id: str, offset: int, digests: UploadDigests | None) -> None:
        if digests is not None:
            self._running.store(upload_id, offset, digests)
        else:
            self._running.forget(upload_id)  # another process appended: not known here

    def _begin_sync(self, state: UploadState) -> None:
        json_path, bin_path = self._upload_paths(state.id)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        self._write_state(state)
        # The state first: a crash before the bytes file leaves a state that is not found
        # and expires, never bytes no state accounts for.
        fd = os.open(bin_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, self.file_mode)  # what it has once completed
        finally:
            os.close(fd)
        fsync_dir(json_path.parent)

    def _write_state(self, state: UploadState) -> None:
        json_path, _ = self._upload_paths(state.id)
        tmp_dir = self.state / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix="state-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(_dump(state), out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, json_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _read_state(
        self, json_path: Path, bin_path: Path, *, with_head: bool = True
    ) -> UploadState:
        """The stored state; ``with_head=False`` is for a caller holding the bytes file locked
        (:func:`_lock` found it): the file is not opened again and the head is left empty."""
        state = _parse(_load(json_path))
        if state is None:
            raise UploadNotFound(json_path.stem)
        if not with_head:
            return state
        try:
            with open(bin_path, "rb") as data:
                state.head = data.read(min(state.offset, HEAD_BYTES))
        except FileNotFoundError:
            raise UploadNotFound(state.id) from None
        return state

    def _expired_sync(self, now: datetime, limit: int) -> list[UploadState]:
        folder = self.state / UPLOADS_DIR
        expired = []
        for json_path in folder.glob("*.json") if folder.is_dir() else []:
            state = _parse(_load(json_path))
            if state is None or state.expires_at >= now:
                continue
            # no bytes file (a completion's crash): listed all the same, for the sweep
            with contextlib.suppress(OSError), open(json_path.with_suffix(".bin"), "rb") as data:
                state.head = data.read(min(state.offset, HEAD_BYTES))
            expired.append(state)
        expired.sort(key=lambda state: state.expires_at)
        return expired[:limit]


# -- helpers -------------------------------------------------------------------------------


def _lock(bin_path: Path) -> int:
    """Opens and locks the bytes file of an upload: its descriptor (close it to unlock)."""
    try:
        fd = os.open(bin_path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UploadNotFound(bin_path.stem) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UploadLocked(bin_path.stem) from None
        try:
            now_there = os.stat(bin_path)
        except FileNotFoundError:
            raise UploadNotFound(bin_path.stem) from None
        locked = os.fstat(fd)
        if (now_there.st_dev, now_there.st_ino) != (locked.st_dev, locked.st_ino):
            raise UploadNotFound(bin_path.stem)  # completed or terminated while we waited
    except BaseException:
        os.close(fd)
        raise
    return fd


def _writable(target: Path, root: Path) -> None:
    """:class:`InvalidKey` if ``target`` is a folder or a folder on its way is a file."""
    if target.is_dir():
        raise InvalidKey(f"{target.relative_to(root)} is a directory")
    for folder in target.relative_to(root).parents:
        if (root / folder).exists() and not (root / folder).is_dir():
            raise InvalidKey(f"{target.relative_to(root)}: a parent segment is a file")


def _write_at(fd: int, data: bytes, position: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, position)
        view = view[written:]
        position += written


def _digest_file(fd: int, length: int) -> UploadDigests:
    digests = UploadDigests()
    position = 0
    while position < length:
        block = os.pread(fd, min(READ_BACK_BLOCK, length - position), position)
        if not block:
            raise StorageUnavailable("an upload's bytes file is shorter than its offset")
        digests.update(block)
        position += len(block)
    return digests


def _dump(state: UploadState) -> dict[str, Any]:
    return {
        "id": state.id,
        "name": state.name,
        "length": state.length,
        "offset": state.offset,
        "created_at": state.created_at.isoformat(),
        "expires_at": state.expires_at.isoformat(),
        "owner": state.owner,
        "metadata": state.metadata,
    }


def _parse(raw: dict[str, Any]) -> UploadState | None:
    """The state a JSON document holds, None if it is not one (torn, foreign)."""
    try:
        state = UploadState(
            id=str(raw["id"]),
            name=str(raw["name"]),
            length=None if raw["length"] is None else int(raw["length"]),
            offset=int(raw["offset"]),
            created_at=utc(datetime.fromisoformat(raw["created_at"])),
            expires_at=utc(datetime.fromisoformat(raw["expires_at"])),
            owner=str(raw["owner"]),
            metadata={str(k): str(v) for k, v in dict(raw["metadata"]).items()},
        )
    except (KeyError, TypeError, ValueError):
        return None
    return state


def _load(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def new_sidecar(
    content_type: str | None, metadata: Mapping[str, Any] | None, digests: UploadDigests
) -> dict[str, Any]:
    """The sidecar of a new file (what ``save`` and ``complete_upload`` store beside it): its
    content type, the ``md5`` of its content and its ``sha256`` in ``metadata``."""
    return {
        "contentType": content_type,
        "md5": digests.md5,
        "metadata": {**(metadata or {}), "sha256": digests.sha256},
    }


def fsync_dir(directory: Path) -> None:
    """Makes what was created, renamed or removed in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _disk_error(exc: OSError) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage(f"resumable upload: {exc.strerror}")
    return StorageUnavailable(f"resumable upload: {exc.strerror}")


async def _disk(awaitable: Awaitable[T]) -> T:
    """Awaits a disk operation; an ``OSError`` becomes the storage error it means."""
    try:
        return await awaitable
    except OSError as exc:
        raise _disk_error(exc) from exc
