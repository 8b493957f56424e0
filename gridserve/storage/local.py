"""Local-disk storage: files under a root directory, the embedded default.

Layout: the file named ``show/ep1.webm`` is ``ROOT/show/ep1.webm``, a plain file an operator
can see, back up, or drop in by hand. What it was uploaded with (content type, digests, user
metadata) is kept in a sidecar named by the SHA-256 of the name,
``ROOT/.gridserve/meta/ab/abcdef....json`` (the name is stored inside), so no content name can
collide with a sidecar or make its path too long. A sidecar records the size and mtime of the
content it describes and is ignored when they no longer match (the file was replaced by hand,
or a crash fell between the two renames), so it can never lend a stale ETag to new content.
Files without a sidecar are served from what ``stat`` says. Sidecars of the first layout
(``.gridserve/meta/<name>.json``, 0.1) are still read, and replaced on the name's next write.
A copy made by ``gridserve migrate`` keeps its original's upload date as the file's mtime, and
in its sidecar the original's ETag when no digest carries it.

The tree is the user's: reading, listing and serving create nothing, so a read-only tree is
served; ``ROOT/.gridserve/`` (sidecars and temporary files) appears on the first write only.
Files are written with the mode the process umask gives (``0644`` under ``022``).

Keys map to paths safely: no empty, ``.`` or ``..`` segments and no segment longer than
``NAME_MAX`` (:class:`InvalidKey`); no segment starting with a dot (hidden, so ``.gridserve``,
``.git`` or ``.env`` are never served); the real path (after links) must stay under the real
root: links whose target is inside the root are followed (files and folders, in listings too),
links leading out are not found (the reason logged at DEBUG). Errors a request's path causes
(too long, a link loop, no permission) are :class:`FileNotFound` or :class:`InvalidKey`, never
an outage, and never log a disk path above DEBUG.

Writes are atomic: content goes to a temporary file under ``ROOT/.gridserve/tmp``, is fsynced
and renamed into place; an aborted upload leaves nothing visible. Revisions: this storage keeps
the newest revision only (saving an existing name replaces it atomically); ``rev`` ``-1`` and
``0`` both name it, any other revision is not found.

Resumable uploads (tus) keep their state and bytes under ``ROOT/.gridserve/uploads/`` until
they complete: :mod:`gridserve.storage.localuploads`.

Listings walk only the prefix's folder, in order, and stop after ``limit`` names
(:mod:`gridserve.storage.localtree`); they run on a small executor of their own, at most
``max_listings`` at a time, so they never delay an upload's fsync on the shared thread pool.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Hashable,
    Mapping,
)
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from gridserve.storage.base import (
    CorruptFile,
    Derived,
    FileInfo,
    FileNotFound,
    InsufficientStorage,
    InvalidKey,
    Storage,
    StorageUnavailable,
    UploadDigests,
    check_key,
    copied_validators,
    stored_content_type,
)
from gridserve.storage.localtree import walk_names
from gridserve.storage.localuploads import LocalUploads, fsync_dir, new_sidecar
from gridserve.storage.writes import settle

log = logging.getLogger("gridserve.storage.local")

T = TypeVar("T")
READ_BLOCK = 64 * 1024  # per slow client, one block is in flight: keep it small
STATE_DIR = ".gridserve"
NAME_MAX = 255
LIST_THREADS = 2
RESOLVED_CACHE = 4096  # names whose FileInfo is kept while stat shows them unchanged
MAX_LISTINGS = 4
# Errors a request's own path causes: the name is not there for it, whatever the disk holds.
NOT_FOUND_ERRNOS = frozenset(
    {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.EACCES, errno.EPERM}
)


class LocalStorage(LocalUploads, Storage):
    """Files under ``root``. ``block_size`` is the read granularity. A missing ``root`` is
    created with ``create=True`` (the default), else :class:`FileNotFoundError`; a root that
    is not a directory is :class:`NotADirectoryError`. ``max_listings`` listings run at once
    (more wait their turn) on ``list_threads`` threads of their own.

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
        create: bool = True,
        list_threads: int = LIST_THREADS,
        max_listings: int = MAX_LISTINGS,
    ) -> None:
        self.root = Path(root).absolute()
        self.block_size = block_size
        self.io_threads = io_threads
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        elif not self.root.exists():
            raise FileNotFoundError(errno.ENOENT, "no such directory", str(self.root))
        if not self.root.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(self.root))
        self.real_root = self.root.resolve()
        self._real_root_str = str(self.real_root)
        self.state = self.real_root / STATE_DIR
        self.file_mode = 0o666 & ~_process_umask()
        self._list_threads = list_threads
        self._max_listings = max_listings
        self._list_executor: ThreadPoolExecutor | None = None
        self._listings: asyncio.Semaphore | None = None
        self._resolved: dict[str, tuple[Hashable, FileInfo]] = {}

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
            if len(os.fsencode(segment)) > NAME_MAX:
                raise InvalidKey(f"a name segment longer than {NAME_MAX} bytes")
        return "/".join(segments)

    def _content_path(self, relative: str) -> Path:
        """The path a write of ``relative`` goes to; :class:`InvalidKey` if a link on the way
        leads outside the root (nothing may be written there)."""
        path = self.real_root / relative
        if not self._real_inside(os.path.realpath(path.parent)):
            log.debug("write of %s refused: %s leads outside the root", relative, path.parent)
            raise InvalidKey(f"{relative}: a folder on the way leads outside the storage")
        return path

    def _real_inside(self, real: str) -> bool:
        return real == self._real_root_str or real.startswith(self._real_root_str + os.sep)

    def _open_inside(self, relative: str) -> tuple[int, os.stat_result]:
        """Opens a regular file under the root for reading: (fd, its stat). Raises FileNotFound
        for missing files, directories, and anything whose real location (after symlinks) is
        outside the root, checked on the descriptor actually opened."""
        path = os.path.join(self._real_root_str, relative)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            raise _request_error(relative, path, exc) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise FileNotFound(relative)
            if not self._is_inside(fd, path):
                log.debug("%s not found: %s leads outside the root", relative, path)
                raise FileNotFound(relative)
        except BaseException:
            os.close(fd)
            raise
        return fd, st

    def is_file_inside(self, info: FileInfo) -> bool:
        """Whether ``info``'s name opens as a regular file whose real location (after links,
        checked on the descriptor opened) is inside the root: the check of :meth:`resolve`
        (what ``--accel-redirect`` asks before handing a path to nginx). ``info`` as the last
        :meth:`resolve` of its name returned it passed that check then: no second look."""
        relative = str(info.id)
        known = self._resolved.get(relative)
        if known is not None and known[1] is info:
            return True
        try:
            fd, _ = self._open_inside(relative)
        except (FileNotFound, InvalidKey, StorageUnavailable):
            return False
        os.close(fd)
        return True

    def _is_inside(self, fd: int, path: str) -> bool:
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")  # what the kernel opened: one syscall
        except OSError:
            real = os.path.realpath(path)  # no /proc: walk the path instead
        return real.startswith(self._real_root_str + os.sep)

    def _meta_path(self, relative: str) -> Path:
        return _meta_path(self.state, relative)

    def _old_meta_path(self, relative: str) -> Path:
        """Where the first layout (0.1) kept the sidecar (read as a fallback)."""
        return _old_meta_path(self.state, relative)

    # -- reading -------------------------------------------------------------------------

    async def resolve(self, key: str, revision: int | None = None) -> FileInfo:
        relative = self._relative(key)
        if revision not in (None, -1, 0):
            raise FileNotFound(key)
        return await self._io(self._resolve_sync, relative)

    def _resolve_sync(self, relative: str) -> FileInfo:
        fd, st = self._open_inside(relative)
        os.close(fd)
        # What the answer is made of: the file and its sidecars (either layout), as stat sees
        # them. Sidecars are replaced by rename (a new inode) and any write changes ctime, so
        # an unchanged key means an unchanged FileInfo: no sidecar read, no JSON, no new ETag.
        key = (
            _stat_key(st),
            _stat_key_of(self._meta_path(relative)),
            _stat_key_of(self._old_meta_path(relative)),
        )
        known = self._resolved.get(relative)
        if known is not None and known[0] == key:
            return known[1]
        info = self._info(relative, st)
        if len(self._resolved) >= RESOLVED_CACHE:
            # the oldest entry; with io_threads another thread may be evicting it too
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                del self._resolved[next(iter(self._resolved))]
        self._resolved[relative] = (key, info)
        return info

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
            native_etag=sidecar.get("etag") if isinstance(sidecar.get("etag"), str) else None,
        )

    def _read_sidecar(self, relative: str, st: os.stat_result) -> dict[str, Any]:
        sidecar = _load_json(self._meta_path(relative))
        if sidecar.get("key") != relative:
            sidecar = self._read_old_sidecar(relative)
        if sidecar.get("size") != st.st_size or sidecar.get("mtime_ns") != st.st_mtime_ns:
            return {}
        return sidecar

    def _read_old_sidecar(self, relative: str) -> dict[str, Any]:
        """The sidecar of the old layout, if there is one (it has no ``key``: a file there
        with a ``key`` is a new sidecar whose hash happens to look like that name)."""
        sidecar = _load_json(self._old_meta_path(relative))
        return {} if "key" in sidecar else sidecar

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
        if self._list_executor is None or self._listings is None:
            self._list_executor = ThreadPoolExecutor(
                self._list_threads, thread_name_prefix="gridserve-list"
            )
            self._listings = asyncio.Semaphore(self._max_listings)
        async with self._listings:
            loop = asyncio.get_running_loop()
            found = await loop.run_in_executor(
                self._list_executor, self._list_sync, prefix, limit, after
            )
        for info in found:
            yield info

    def _list_sync(self, prefix: str, limit: int, after: str) -> builtins.list[FileInfo]:
        found: builtins.list[FileInfo] = []
        names = walk_names(self._real_root_str, prefix, after, want=limit)
        while len(found) < limit:
            batch = builtins.list(islice(names, limit - len(found)))
            if not batch:
                break
            for relative in batch:
                try:
                    found.append(self._resolve_sync(relative))
                except (FileNotFound, InvalidKey, StorageUnavailable):
                    continue  # gone, or unreadable, since the walk saw it
        return found

    async def ping(self) -> None:
        if not await self._io(os.path.isdir, self.real_root):
            raise StorageUnavailable(f"{self.root} is not a directory")

    async def close(self) -> None:
        if self._list_executor is not None:
            self._list_executor.shutdown(wait=False)
            self._list_executor = None

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
        relative = self._relative(name)
        target = self._content_path(relative)
        # Synchronous on purpose: a cancellation while a thread made the file would leak it.
        fd, tmp_name = self._temporary_file()
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
            sidecar = new_sidecar(content_type, metadata, digests)
            if original is not None:
                kept = copied_validators(original, metadata, digests)
                sidecar.update(md5=kept.md5, metadata=kept.metadata, etag=kept.etag)
                since_epoch = original.upload_date - datetime(1970, 1, 1, tzinfo=timezone.utc)
                when = since_epoch // timedelta(microseconds=1) * 1000
                os.utime(tmp, ns=(when, when))  # the file's date is its upload date
            # settle: a commit cancelled half-way would still rename in its thread
            return await settle(asyncio.to_thread(self._commit, tmp, target, relative, sidecar))
        except BaseException as exc:
            # Synchronous on purpose: it must run even while the task is being cancelled.
            tmp.unlink(missing_ok=True)  # noqa: ASYNC240
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage(f"{relative}: {exc.strerror}") from exc
            raise

    def _temporary_file(self) -> tuple[int, str]:
        """A new file under ``.gridserve/tmp`` (created on the first write), with the mode the
        umask gives: what it will have once renamed into place."""
        tmp_dir = self.state / "tmp"
        try:
            tmp_dir.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="up-")
        except OSError as exc:
            log.debug("cannot create a file in %s: %s", tmp_dir, exc)
            raise StorageUnavailable(f"cannot write to the storage: {exc.strerror}") from None
        os.fchmod(fd, self.file_mode)
        return fd, name

    def _commit(self, tmp: Path, target: Path, relative: str, sidecar: dict[str, Any]) -> FileInfo:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise InvalidKey(f"{relative}: a parent segment is a file") from exc
        except OSError as exc:
            raise _request_error(relative, str(target.parent), exc, writing=True) from None
        self._content_path(relative)  # again, now that the folders exist: no link swapped in
        if target.is_dir():
            raise InvalidKey(f"{relative} is a directory")
        st = tmp.stat()
        sidecar.update(key=relative, size=st.st_size, mtime_ns=st.st_mtime_ns)
        meta_path = self._meta_path(relative)
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        meta_fd, meta_tmp = tempfile.mkstemp(dir=self.state / "tmp", prefix="meta-")
        try:
            os.fchmod(meta_fd, self.file_mode)
            with os.fdopen(meta_fd, "w", encoding="utf-8") as out:
                json.dump(sidecar, out)
            os.replace(meta_tmp, meta_path)
            os.replace(tmp, target)
        except BaseException:
            Path(meta_tmp).unlink(missing_ok=True)
            raise
        fsync_dir(target.parent)
        self._remove_old_sidecar(relative)
        return self._info(relative, target.stat())

    def _remove_old_sidecar(self, relative: str) -> None:
        if self._read_old_sidecar(relative):
            with contextlib.suppress(OSError):  # left behind, it is ignored anyway
                self._old_meta_path(relative).unlink(missing_ok=True)

    async def delete(self, info: FileInfo) -> None:
        relative = self._relative(info.filename)
        path = self._content_path(relative)
        try:
            await self._io(path.unlink)
        except OSError as exc:
            raise _request_error(relative, str(path), exc, writing=True) from None
        await self._io(self._meta_path(relative).unlink, missing_ok=True)
        await self._io(self._remove_old_sidecar, relative)
        await self.delete_derived(info)

    # -- derived data: metadata patches in the sidecar, files under .gridserve/derived -----

    async def update_metadata(self, info: FileInfo, patch: Mapping[str, Any]) -> None:
        relative = self._relative(info.filename)
        await asyncio.to_thread(self._update_metadata_sync, relative, info, patch)

    def _update_metadata_sync(
        self, relative: str, info: FileInfo, patch: Mapping[str, Any]
    ) -> None:
        fd, st = self._open_inside(relative)
        os.close(fd)
        if self._info(relative, st).etag != info.etag:
            raise FileNotFound(f"{relative}: replaced since it was looked up")
        sidecar = self._read_sidecar(relative, st) or {
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
        }
        sidecar["key"] = relative
        metadata = sidecar.get("metadata") if isinstance(sidecar.get("metadata"), dict) else {}
        sidecar["metadata"] = {**(metadata or {}), **patch}
        meta_path = self._meta_path(relative)
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        meta_tmp = meta_path.with_name(meta_path.name + ".tmp")
        meta_tmp.write_text(json.dumps(sidecar), "utf-8")
        os.replace(meta_tmp, meta_path)

    def _derived_dir(self, info: FileInfo) -> Path:
        digest = hashlib.sha256(str(info.id).encode("utf-8", "surrogatepass")).hexdigest()[:40]
        return self.state / "derived" / digest

    def _derived_path(self, info: FileInfo, name: str) -> Path:
        if "/" in name or name.startswith("."):
            raise InvalidKey(f"bad derived name {name!r}")
        source = hashlib.sha256(str(info.etag).encode()).hexdigest()[:16]
        return self._derived_dir(info) / f"{source}.{name}"

    async def put_derived(self, info: FileInfo, name: str, data: bytes, content_type: str) -> None:
        path = self._derived_path(info, name)
        await asyncio.to_thread(self._put_derived_sync, path, name, data, content_type)

    @staticmethod
    def _put_derived_sync(path: Path, name: str, data: bytes, content_type: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f"*.{name}"):  # made from content since replaced
            stale.unlink(missing_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(content_type.encode() + b"\n" + data)
        os.replace(tmp, path)

    async def get_derived(self, info: FileInfo, name: str) -> Derived | None:
        try:
            raw = await self._io(self._derived_path(info, name).read_bytes)
        except FileNotFoundError:
            return None
        content_type, _, data = raw.partition(b"\n")
        return Derived(data, content_type.decode())

    async def delete_derived(self, info: FileInfo) -> None:
        await asyncio.to_thread(shutil.rmtree, self._derived_dir(info), ignore_errors=True)

    async def derived_names(self, info: FileInfo) -> builtins.list[str]:
        directory = self._derived_dir(info)
        if not directory.is_dir():
            return []
        return sorted(
            p.name.split(".", 1)[1] for p in directory.iterdir() if not p.name.endswith(".tmp")
        )


def _request_error(
    relative: str, path: str, exc: OSError, *, writing: bool = False
) -> FileNotFound | InvalidKey | StorageUnavailable:
    """The storage error for an ``OSError`` on the path of ``relative``: what the request's
    own path causes is not found or invalid; the rest is an outage. The disk path is logged
    at DEBUG only (a stranger's request must not put it in the logs)."""
    log.debug("%s: %s on %s", relative, exc.strerror, path)
    if exc.errno in (errno.ENAMETOOLONG, errno.EINVAL):
        return InvalidKey(f"{relative}: not a possible file name here")
    if writing and exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EEXIST):
        return InvalidKey(f"{relative}: a folder on the way is not a folder")
    if exc.errno in NOT_FOUND_ERRNOS and not (writing and exc.errno in (errno.EACCES, errno.EPERM)):
        return FileNotFound(relative)
    return StorageUnavailable(f"{relative}: {exc.strerror}")


@lru_cache(maxsize=4096)
def _meta_path(state: Path, relative: str) -> Path:
    """Where the sidecar of ``relative`` lives under ``state`` (the same on every call: kept,
    a hash and three path joins per read are worth keeping)."""
    digest = hashlib.sha256(relative.encode("utf-8", "surrogateescape")).hexdigest()
    return state / "meta" / digest[:2] / f"{digest}.json"


@lru_cache(maxsize=4096)
def _old_meta_path(state: Path, relative: str) -> Path:
    return state / "meta" / (relative + ".json")


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _stat_key_of(path: Path) -> tuple[int, int, int, int, int] | None:
    """:func:`_stat_key` of ``path``; None when there is nothing (or nothing readable)."""
    try:
        return _stat_key(os.stat(path))
    except (OSError, ValueError):
        return None


def _load_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as source:
            value = json.loads(source.read())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _process_umask() -> int:
    """The umask, read without changing it where Linux says it (``os.umask`` sets it, which
    would race with threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
