"""Local-disk storage: files under a root directory, the embedded default.

Layout: the file named ``show/ep1.webm`` is ``ROOT/show/ep1.webm``, a plain file an operator
can see, back up, or drop in by hand; what it was uploaded with (content type, digests, user
metadata) is kept beside it in ``ROOT/.gridserve/meta/show/ep1.webm.json``. A sidecar records
the size and mtime of the content it describes and is ignored when they no longer match (the
file was replaced by hand, or a crash fell between the two renames), so it can never lend a
stale ETag to new content. Files without a sidecar are served from what ``stat`` says.

Keys map to paths safely: no empty, ``.`` or ``..`` segments (:class:`InvalidKey`); no segment
starting with a dot (hidden, so ``.gridserve``, ``.git`` or ``.env`` are never served); the
resolved real path must stay under the real root, so a symlink cannot lead out of it.

Writes are atomic: content goes to a temporary file under ``ROOT/.gridserve/tmp``, is fsynced
and renamed into place; an aborted upload leaves nothing visible. Revisions: this storage keeps
the newest revision only (saving an existing name replaces it atomically); ``rev`` ``-1`` and
``0`` both name it, any other revision is not found.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import json
import os
import stat
import tempfile
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from gridserve.storage.base import (
    CorruptFile,
    FileInfo,
    FileNotFound,
    InsufficientStorage,
    InvalidKey,
    Storage,
    StorageUnavailable,
    UploadDigests,
    check_key,
    stored_content_type,
)
from gridserve.storage.writes import settle

T = TypeVar("T")
READ_BLOCK = 64 * 1024  # per slow client, one block is in flight: keep it small
STATE_DIR = ".gridserve"


class LocalStorage(Storage):
    """Files under ``root`` (created if absent). ``block_size`` is the read granularity.

    File system calls run on the event loop, as Tornado's ``StaticFileHandler`` and nginx
    (without aio) make them: on a local disk they return from the page cache in microseconds,
    and a thread hop per call costs more than the call. With ``io_threads=True`` every call
    goes through a thread instead, so that a slow or network file system (NFS, a spinning
    disk under load) cannot stall the loop.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        block_size: int = READ_BLOCK,
        io_threads: bool = False,
    ) -> None:
        self.root = Path(root).absolute()
        self.block_size = block_size
        self.io_threads = io_threads
        self.root.mkdir(parents=True, exist_ok=True)
        self.real_root = self.root.resolve()
        self._real_root_str = str(self.real_root)
        self.state = self.real_root / STATE_DIR
        (self.state / "tmp").mkdir(parents=True, exist_ok=True)
        (self.state / "meta").mkdir(parents=True, exist_ok=True)

    @property
    def description(self) -> str:
        return f"local directory {self.root}"

    async def _io(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.io_threads:
            return await asyncio.to_thread(function, *args, **kwargs)
        return function(*args, **kwargs)

    # -- keys and paths ------------------------------------------------------------------

    def _relative(self, key: str) -> str:
        check_key(key)
        segments = key.split("/")
        for segment in segments:
            if segment in ("", ".", ".."):
                raise InvalidKey("empty, '.' or '..' path segment")
            if segment.startswith("."):
                raise FileNotFound(key)  # hidden: never served, never written
        return "/".join(segments)

    def _content_path(self, relative: str) -> Path:
        path = self.real_root / relative
        real = Path(os.path.realpath(path))
        if real != self.real_root and self.real_root not in real.parents:
            raise FileNotFound(relative)  # a symlink pointing out of the root
        return path

    def _open_inside(self, relative: str) -> tuple[int, os.stat_result]:
        """Opens a regular file under the root for reading: (fd, its stat). Raises FileNotFound
        for missing files, directories, and anything whose real location (after symlinks) is
        outside the root, checked on the descriptor actually opened."""
        path = os.path.join(self._real_root_str, relative)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise FileNotFound(relative) from exc
        except OSError as exc:
            raise StorageUnavailable(f"{path}: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or not self._is_inside(fd, path):
                raise FileNotFound(relative)
        except BaseException:
            os.close(fd)
            raise
        return fd, st

    def _is_inside(self, fd: int, path: str) -> bool:
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")  # what the kernel opened: one syscall
        except OSError:
            real = os.path.realpath(path)  # no /proc: walk the path instead
        return real.startswith(self._real_root_str + os.sep)

    def _meta_path(self, relative: str) -> Path:
        return self.state / "meta" / (relative + ".json")

    # -- reading -------------------------------------------------------------------------

    async def resolve(self, key: str, revision: int | None = None) -> FileInfo:
        relative = self._relative(key)
        if revision not in (None, -1, 0):
            raise FileNotFound(key)
        return await self._io(self._resolve_sync, relative)

    def _resolve_sync(self, relative: str) -> FileInfo:
        fd, st = self._open_inside(relative)
        os.close(fd)
        return self._info(relative, st)

    def _info(self, relative: str, st: os.stat_result) -> FileInfo:
        sidecar = self._read_sidecar(relative, st)
        metadata = sidecar.get("metadata") if isinstance(sidecar.get("metadata"), dict) else {}
        return FileInfo(
            id=relative,
            filename=relative,
            length=st.st_size,
            upload_date=datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=timezone.utc),
            chunk_size=self.block_size,
            content_type=stored_content_type(sidecar.get("contentType"), metadata or {}),
            md5=sidecar.get("md5"),
            metadata=metadata or {},
        )

    def _read_sidecar(self, relative: str, st: os.stat_result) -> dict[str, Any]:
        try:
            sidecar = json.loads(self._meta_path(relative).read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        if (
            not isinstance(sidecar, dict)
            or sidecar.get("size") != st.st_size
            or sidecar.get("mtime_ns") != st.st_mtime_ns
        ):
            return {}
        return sidecar

    async def read(
        self, info: FileInfo, start: int = 0, stop: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        stop = info.length if stop is None else min(stop, info.length)
        if start >= stop:
            return
        # Deleted since it was looked up: FileNotFound escapes as is (a 404 before the first
        # byte). Once open, the file's content stays readable even if it is unlinked meanwhile.
        fd, st = await self._io(self._open_inside, self._relative(info.filename))
        try:
            if st.st_size != info.length:
                raise CorruptFile(f"{info.filename}: replaced since it was looked up")
            position = start
            while position < stop:
                want = min(self.block_size, stop - position)
                data = await self._io(os.pread, fd, want, position)
                if len(data) != want:
                    raise CorruptFile(f"{info.filename}: short read at byte {position}")
                position += want
                yield data
        finally:
            os.close(fd)

    async def list(
        self, prefix: str = "", limit: int = 100, after: str = ""
    ) -> AsyncIterator[FileInfo]:
        for info in await asyncio.to_thread(self._list_sync, prefix, limit, after):
            yield info

    def _list_sync(self, prefix: str, limit: int, after: str) -> builtins.list[FileInfo]:
        found: builtins.list[FileInfo] = []
        for directory, subdirs, files in os.walk(self.real_root):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            base = Path(directory).relative_to(self.real_root).as_posix()
            for name in sorted(f for f in files if not f.startswith(".")):
                relative = name if base == "." else f"{base}/{name}"
                if not relative.startswith(prefix) or relative <= after:
                    continue
                with contextlib.suppress(FileNotFound, StorageUnavailable):
                    found.append(self._resolve_sync(relative))
        found.sort(key=lambda info: info.filename)
        return found[:limit]

    async def ping(self) -> None:
        if not await self._io(os.path.isdir, self.real_root):
            raise StorageUnavailable(f"{self.root} is not a directory")

    # -- writing -------------------------------------------------------------------------

    async def save(
        self,
        name: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> FileInfo:
        relative = self._relative(name)
        target = self._content_path(relative)
        fd, tmp_name = tempfile.mkstemp(dir=self.state / "tmp", prefix="upload-")
        tmp = Path(tmp_name)
        digests = UploadDigests()
        try:
            with os.fdopen(fd, "wb") as out:
                async for piece in chunks:
                    digests.update(piece)
                    # settle: the file must not close under a write still running in a thread
                    await settle(self._io(out.write, piece))
                await settle(self._io(out.flush))
                await settle(asyncio.to_thread(os.fsync, out.fileno()))  # fsync can take long
            # settle: a commit cancelled half-way would still rename in its thread
            return await settle(
                asyncio.to_thread(
                    self._commit,
                    tmp,
                    target,
                    relative,
                    {
                        "contentType": content_type,
                        "md5": digests.md5,
                        "metadata": {**(metadata or {}), "sha256": digests.sha256},
                    },
                )
            )
        except BaseException as exc:
            # Synchronous on purpose: it must run even while the task is being cancelled.
            tmp.unlink(missing_ok=True)  # noqa: ASYNC240
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage(f"{relative}: {exc.strerror}") from exc
            raise

    def _commit(self, tmp: Path, target: Path, relative: str, sidecar: dict[str, Any]) -> FileInfo:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise InvalidKey(f"{relative}: a parent segment is a file") from exc
        if target.is_dir():
            raise InvalidKey(f"{relative} is a directory")
        st = tmp.stat()
        sidecar.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
        meta_path = self._meta_path(relative)
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        meta_tmp = meta_path.with_name(meta_path.name + ".tmp")
        meta_tmp.write_text(json.dumps(sidecar), "utf-8")
        os.replace(meta_tmp, meta_path)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        return self._info(relative, target.stat())

    async def delete(self, info: FileInfo) -> None:
        relative = self._relative(info.filename)
        path = self._content_path(relative)
        try:
            await self._io(path.unlink)
        except FileNotFoundError as exc:
            raise FileNotFound(relative) from exc
        await self._io(self._meta_path(relative).unlink, missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
