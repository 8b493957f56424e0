"""Moving files between storages without breaking a URL (``gridserve migrate``).

:func:`migrate` copies every file of a source storage whose name starts with ``only`` into a
target storage, ``jobs`` names at a time, streaming (a file is never held whole in memory).
Each copy keeps its original's name, content type, metadata, md5, sha256 and upload date
(``Storage.save(original=...)``), so the target serves the same bytes under the same URL with
the same ETag and Last-Modified. Between GridFS buckets every revision is copied with its
``_id``; into a storage that keeps the newest revision only, the newest is copied and the
older ones are counted as skipped.

Idempotent and resumable: a file the target already holds with the same digest is skipped, a
copy is atomic on every backend (an interrupted run leaves no partial file), so a second run
continues where the first stopped. With ``verify`` each copy is read back and its SHA-256
compared with the source's; with ``delete_source`` a source file is deleted only once its copy
is verified (between GridFS buckets, each revision after its own copy; into a newest-only
storage, every revision of the name, oldest first, once the newest is verified).

A storage that becomes unreachable stops the run (:attr:`Summary.interrupted`): every other
file would fail the same way, and a re-run picks up from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from gridserve.names import normalize_name
from gridserve.storage.base import (
    FileExists,
    FileInfo,
    FileNotFound,
    InvalidKey,
    Storage,
    StorageUnavailable,
)

LIST_PAGE = 500


@dataclass
class Summary:
    """What a run did; :meth:`as_json` is the summary the command prints."""

    copied: int = 0
    skipped: int = 0  # already in the target with the same digest
    failed: int = 0
    bytes: int = 0  # copied
    skipped_revisions: int = 0  # older revisions a newest-only target cannot hold
    deleted: int = 0  # source files deleted (--delete-source)
    kept_newer: int = 0  # the target's file of that name is newer: neither side touched
    derived: int = 0  # posters and other derived files copied with their originals
    renamed: list[dict[str, str]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    planned: list[dict[str, Any]] = field(default_factory=list)  # --dry-run
    interrupted: str | None = None
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        rate = self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0
        shown: dict[str, Any] = {
            "copied": self.copied,
            "skipped": self.skipped,
            "failed": self.failed,
            "bytes": self.bytes,
            "skipped_revisions": self.skipped_revisions,
            "deleted": self.deleted,
            "kept_newer": self.kept_newer,
            "derived": self.derived,
            "seconds": round(self.seconds, 3),
            "mb_per_s": round(rate, 2),
            "renamed": self.renamed,
            "errors": self.errors,
            "interrupted": self.interrupted,
        }
        return shown


def target_name(name: str) -> str:
    """The name a file gets in the target: the key an upload of that name would get
    (:func:`gridserve.names.normalize_name`: NFC), or ValueError for a name no storage should
    hold (``..``, dot or control characters, too long)."""
    return normalize_name(name)


@dataclass(frozen=True)
class Options:
    """``only``: a name prefix; ``jobs``: names copied at once; ``verify``: read each copy
    back; ``dry_run``: plan only; ``delete_source``: move instead of copy; ``normalize``: the
    target name of a source name (raises ValueError for a name no storage should hold)."""

    only: str = ""
    jobs: int = 4
    verify: bool = True
    dry_run: bool = False
    delete_source: bool = False
    normalize: Callable[[str], str] = target_name


Progress = Callable[[int, int], None]  # (files done, bytes copied) since the last call


class CopyFailed(Exception):
    """One file could not be copied (the run goes on)."""


async def migrate(
    source: Storage,
    target: Storage,
    options: Options,
    progress: Progress | None = None,
    summary: Summary | None = None,
) -> Summary:
    """Copies ``source`` into ``target`` as the module docstring says; returns the summary
    (``summary``, if given, is filled as the run goes: it says what was done even when the
    run is cancelled)."""
    summary = summary if summary is not None else Summary()
    started = time.monotonic()
    names: asyncio.Queue[str | None] = asyncio.Queue(maxsize=max(2, 2 * options.jobs))
    mover = _Mover(source, target, options, summary, progress or (lambda files, size: None))

    async def produce() -> None:
        async for name in _names(source, options.only):
            await names.put(name)
        for _ in range(options.jobs):
            await names.put(None)

    async def work() -> None:
        while (name := await names.get()) is not None:
            await mover.move(name)

    tasks = [asyncio.ensure_future(produce())]
    tasks += [asyncio.ensure_future(work()) for _ in range(options.jobs)]
    try:
        await asyncio.gather(*tasks)
    except StorageUnavailable as exc:
        summary.interrupted = str(exc).splitlines()[0] if str(exc) else "storage unavailable"
    except Exception as exc:  # the listing refused (access denied, say)
        summary.interrupted = f"{type(exc).__name__}: {exc}".splitlines()[0]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        summary.seconds = time.monotonic() - started
    return summary


async def _names(storage: Storage, only: str) -> AsyncIterator[str]:
    """Every name in ``storage`` starting with ``only``, page by page."""
    after = ""
    while True:
        page = [info.filename async for info in storage.list(only, LIST_PAGE, after)]
        for name in page:
            yield name
        if len(page) < LIST_PAGE:
            return
        after = page[-1]


async def sha256_of(storage: Storage, info: FileInfo) -> str:
    """The SHA-256 of ``info``'s content, read from ``storage``."""
    digest = hashlib.sha256()
    async with aclosing(storage.read(info)) as chunks:
        async for chunk in chunks:
            digest.update(chunk)
    return digest.hexdigest()


def stated_digest(info: FileInfo) -> tuple[str, str] | None:
    """The strongest digest ``info`` states without reading: (kind, hex)."""
    sha256 = info.metadata.get("sha256")
    if isinstance(sha256, str) and sha256:
        return "sha256", sha256.lower()
    if info.md5:
        return "md5", info.md5.lower()
    return None


class _Mover:
    def __init__(
        self,
        source: Storage,
        target: Storage,
        options: Options,
        summary: Summary,
        progress: Progress,
    ) -> None:
        self.source, self.target, self.options = source, target, options
        self.summary, self.progress = summary, progress

    async def move(self, name: str) -> None:
        try:
            target_name = self.options.normalize(name)
        except ValueError as exc:
            self._fail(name, f"cannot be stored under this name: {exc}")
            return
        if target_name != name:
            self.summary.renamed.append({"from": name, "to": target_name})
        try:
            found = (await self.source.revisions(name))[::-1]  # newest first
            if not found:
                return  # deleted since it was listed
            if self.target.keeps_revisions:
                for info in found:  # newest first: the name's URL shows the newest at once
                    if await self._move_one(info, target_name, by_id=True):
                        await self._delete_source([info])
            else:
                self.summary.skipped_revisions += len(found) - 1
                if await self._move_one(found[0], target_name, by_id=False):
                    await self._delete_source(found[::-1])  # oldest first: see module doc
        except CopyFailed as exc:
            self._fail(name, str(exc))
        except StorageUnavailable:
            raise
        except Exception as exc:
            # One file's failure (S3 refusing its metadata as too large, say) is reported
            # with that file, and the run goes on.
            self._fail(name, f"{type(exc).__name__}: {exc}")
        finally:
            self.progress(1, 0)

    def _fail(self, name: str, reason: str) -> None:
        self.summary.failed += 1
        self.summary.errors.append({"name": name, "error": reason})

    async def _existing(self, info: FileInfo, name: str, by_id: bool) -> FileInfo | None:
        """What the target holds for ``info``: the same id (GridFS to GridFS), else the newest
        file of that name."""
        keys = [str(info.id)] if by_id and str(info.id) != info.filename else []
        for key in keys or [name]:
            try:
                found = await self.target.resolve(key)
            except (FileNotFound, InvalidKey):
                continue
            if keys and found.id != info.id:
                continue  # the id string named a file by name, not this id
            return found
        return None

    async def _same_content(self, info: FileInfo, there: FileInfo) -> bool:
        if there.length != info.length:
            return False
        mine, theirs = stated_digest(info), stated_digest(there)
        if mine is not None and theirs is not None and mine[0] == theirs[0]:
            return mine == theirs
        return await sha256_of(self.source, info) == await sha256_of(self.target, there)

    async def _move_one(self, info: FileInfo, name: str, *, by_id: bool) -> bool:
        """Copies one file unless the target has it; True when the target holds a verified
        copy (so the source may go)."""
        there = await self._existing(info, name, by_id)
        if there is not None and await self._same_content(info, there):
            if self.options.dry_run:
                self._plan(info, name, "skip")
                return False
            self.summary.skipped += 1
            await self._copy_derived(info, there)  # an interrupted run may have missed them
            if self.options.verify and self.options.delete_source:
                return await self._verified(info, there, None)
            return True
        if there is not None and by_id and there.id == info.id:
            raise CopyFailed(f"id {info.id} holds other content in the target")
        if there is not None and not by_id and there.upload_date > info.upload_date:
            # Uploaded to the target after this file was (through a server falling back to
            # the source, say): newer, so kept, and the source is kept too.
            self.summary.kept_newer += 1
            if self.options.dry_run:
                self._plan(info, name, "keep newer")
            return False
        if self.options.dry_run:
            self._plan(info, name, "copy")
            return False
        digest = hashlib.sha256()
        copied = 0

        async def stream() -> AsyncIterator[bytes]:
            nonlocal copied
            async with aclosing(self.source.read(info)) as chunks:
                async for chunk in chunks:
                    digest.update(chunk)
                    copied += len(chunk)
                    self.progress(0, len(chunk))
                    yield chunk

        try:
            saved = await self.target.save(
                name,
                stream(),
                content_type=info.content_type,
                metadata=info.metadata,
                original=info,
            )
        except FileExists as exc:
            raise CopyFailed(str(exc)) from exc
        if copied != info.length:
            raise CopyFailed(f"read {copied} of {info.length} bytes")
        self.summary.copied += 1
        self.summary.bytes += copied
        verified = not self.options.verify or await self._verified(info, saved, digest.hexdigest())
        await self._copy_derived(info, saved)
        return verified

    async def _copy_derived(self, info: FileInfo, copy: FileInfo) -> None:
        """Gives ``copy`` what the source derived from ``info``: its media facts (kept aside
        from the metadata where the source keeps them so, as on S3) and its posters. A target
        that keeps no derived data, or already has them, is left as it is."""
        facts = await self.source.media_of(info)
        if facts is not None and await self.target.media_of(copy) is None:
            with contextlib.suppress(NotImplementedError):
                await self.target.update_metadata(copy, {"media": dict(facts)})
        have = set(await self.target.derived_names(copy))
        for name in await self.source.derived_names(info):
            if name in have:
                continue
            derived = await self.source.get_derived(info, name)
            if derived is None:
                continue
            try:
                await self.target.put_derived(copy, name, derived.data, derived.content_type)
            except NotImplementedError:
                return
            self.summary.derived += 1

    async def _verified(self, info: FileInfo, copy: FileInfo, sha256: str | None) -> bool:
        """Reads ``copy`` back and compares its SHA-256 with the source's (``sha256``, else
        read from the source)."""
        expected = sha256 or await sha256_of(self.source, info)
        fresh = await self.target.resolve(str(copy.id))
        if await sha256_of(self.target, fresh) != expected:
            raise CopyFailed("the copy's SHA-256 differs from the source's")
        return True

    async def _delete_source(self, infos: list[FileInfo]) -> None:
        if not self.options.delete_source or self.options.dry_run:
            return
        for info in infos:
            try:
                await self.source.delete(info)
            except FileNotFound:
                continue
            self.summary.deleted += 1

    def _plan(self, info: FileInfo, name: str, action: str) -> None:
        self.summary.planned.append(
            {"name": name, "id": str(info.id), "length": info.length, "action": action}
        )
