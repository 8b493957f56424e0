"""A storage that wraps storages: a primary, then read-only fallbacks, tried in order.

``FallbackStorage(GridFSStorage(...), LocalStorage(...))`` is what serves files while they
move (``gridserve migrate``): the new storage first, the old one behind it, so every URL keeps
answering whichever side the file is on at the moment.

- ``resolve`` asks the primary, then each fallback; a miss everywhere asks the primary once
  more (a migration may have copied the file and deleted its source in between).
  ``revisions`` are those of the first storage holding the name, never a mix.
- ``read`` reads from the storage that resolved the file. If a fallback's copy vanishes
  under the read (its migration deleted it), the read goes on from the primary's copy when
  that has the same ETag and length, from the byte it had reached.
- ``list`` merges the listings by name, the first storage holding a name wins; each storage
  is asked for at most ``limit`` names, so a page costs O(limit) per storage.
- ``save`` and ``delete`` go to the primary only; deleting a file only a fallback holds is
  :class:`FileNotFound` (fallbacks are read-only).
- Any error of a fallback other than a miss is :class:`StorageUnavailable` (503, retried),
  never a 500.
- ``ping`` pings every storage; :meth:`health` says how each answered (``/readyz``).
"""

from __future__ import annotations

import asyncio
import builtins
import weakref
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack, aclosing

from gridserve.storage.base import (
    CorruptFile,
    FileInfo,
    FileNotFound,
    InvalidKey,
    Storage,
    StorageError,
    StorageUnavailable,
)
from gridserve.storage.wrapper import StorageWrapper

PING_TIMEOUT = 3.0


class FallbackStorage(StorageWrapper):
    """``primary``, then each of ``fallbacks`` for what it does not hold (read-only).

    Owns its storages: :meth:`close` closes them all. Writes and resumable uploads go to the
    primary, ``inner`` of :class:`StorageWrapper`.
    """

    def __init__(self, primary: Storage, *fallbacks: Storage) -> None:
        super().__init__(primary)
        self.fallbacks = fallbacks
        self.storages: tuple[Storage, ...] = (primary, *fallbacks)
        # Which fallback resolved a FileInfo, for as long as that FileInfo lives (by identity:
        # FileInfo is not hashable, and two storages may describe a file alike).
        self._owners: dict[int, tuple[weakref.ref[FileInfo], Storage]] = {}

    @property
    def primary(self) -> Storage:
        """The storage tried first, the only one written to."""
        return self.inner

    @property
    def description(self) -> str:
        behind = ", then ".join(storage.description for storage in self.fallbacks)
        return f"{self.primary.description}, then (read-only) {behind}"

    # -- which storage holds a file --------------------------------------------------------

    def _remember(self, info: FileInfo, storage: Storage) -> FileInfo:
        if storage is not self.primary:
            key = id(info)
            owners = self._owners
            self._owners[key] = (weakref.ref(info, lambda _: owners.pop(key, None)), storage)
        return info

    def owner(self, info: FileInfo) -> Storage:
        """The storage that holds ``info`` (the primary unless a fallback resolved it)."""
        entry = self._owners.get(id(info))
        if entry is not None and entry[0]() is info:
            return entry[1]
        return self.primary

    @staticmethod
    def _unavailable(storage: Storage, exc: StorageError) -> StorageUnavailable:
        if isinstance(exc, StorageUnavailable):
            return exc
        return StorageUnavailable(f"fallback {storage.description}: {exc}")

    # -- reading ---------------------------------------------------------------------------

    async def resolve(self, key: str, revision: int | None = None) -> FileInfo:
        try:
            return await self.primary.resolve(key, revision)
        except (FileNotFound, InvalidKey) as exc:
            missed: StorageError = exc
        for storage in self.fallbacks:
            try:
                return self._remember(await storage.resolve(key, revision), storage)
            except (FileNotFound, InvalidKey):
                continue
            except StorageError as exc:
                raise self._unavailable(storage, exc) from exc
        try:
            return await self.primary.resolve(key, revision)
        except (FileNotFound, InvalidKey):
            raise missed from None

    async def revisions(self, name: str) -> builtins.list[FileInfo]:
        """The revisions of ``name`` in the first storage that holds it (never a mix)."""
        found = await self.primary.revisions(name)
        if found:
            return found
        for storage in self.fallbacks:
            try:
                found = await storage.revisions(name)
            except (FileNotFound, InvalidKey):
                continue
            except StorageError as exc:
                raise self._unavailable(storage, exc) from exc
            if found:
                return [self._remember(info, storage) for info in found]
        return []

    async def read(
        self, info: FileInfo, start: int = 0, stop: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        storage = self.owner(info)
        if storage is self.primary:
            async with aclosing(self.primary.read(info, start, stop)) as chunks:
                async for chunk in chunks:
                    yield chunk
            return
        position = start
        try:
            async with aclosing(storage.read(info, start, stop)) as chunks:
                async for chunk in chunks:
                    position += len(chunk)
                    yield chunk
            return
        except (FileNotFound, CorruptFile) as exc:
            moved = await self._moved_copy(info)
            if moved is None:
                if position == start and isinstance(exc, FileNotFound):
                    raise
                raise self._unavailable(storage, exc) from exc
        except StorageError as exc:
            raise self._unavailable(storage, exc) from exc
        async with aclosing(self.primary.read(moved, position, stop)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def _moved_copy(self, info: FileInfo) -> FileInfo | None:
        """The primary's copy of ``info`` (by id, else by name) if it is the same file: same
        ETag and length."""
        for key in dict.fromkeys((str(info.id), info.filename)):
            try:
                copy = await self.primary.resolve(key)
            except StorageError:
                continue
            if copy.etag == info.etag and copy.length == info.length:
                return copy
        return None

    async def list(
        self, prefix: str = "", limit: int = 100, after: str = ""
    ) -> AsyncIterator[FileInfo]:
        if limit <= 0:
            return
        async with AsyncExitStack() as stack:
            listings = [
                (storage, await stack.enter_async_context(_closing(storage, prefix, limit, after)))
                for storage in self.storages
            ]
            heads: builtins.list[FileInfo | None] = [
                await self._next(storage, listing) for storage, listing in listings
            ]
            sent = 0
            while sent < limit:
                present = [(info.filename, i) for i, info in enumerate(heads) if info is not None]
                if not present:
                    return
                name, first = min(present)
                winner = heads[first]
                assert winner is not None
                yield self._remember(winner, listings[first][0])
                sent += 1
                for i, info in enumerate(heads):
                    if info is not None and info.filename == name:
                        heads[i] = await self._next(*listings[i])

    async def _next(self, storage: Storage, listing: AsyncIterator[FileInfo]) -> FileInfo | None:
        try:
            return await anext(listing)
        except StopAsyncIteration:
            return None
        except StorageError as exc:
            if storage is self.primary:
                raise
            raise self._unavailable(storage, exc) from exc

    async def ping(self) -> None:
        for description, problem in await self.health():
            if problem is not None:
                raise StorageUnavailable(f"{description}: {problem}")

    async def health(self) -> builtins.list[tuple[str, str | None]]:
        """Each storage's description and None if it answered a ping within 3 s, else why
        not; the primary first."""

        async def check(storage: Storage) -> str | None:
            try:
                await asyncio.wait_for(storage.ping(), PING_TIMEOUT)
            except (StorageUnavailable, asyncio.TimeoutError) as exc:
                return str(exc).splitlines()[0] if str(exc) else "no answer"
            return None

        problems = await asyncio.gather(*(check(storage) for storage in self.storages))
        return [(s.description, p) for s, p in zip(self.storages, problems, strict=True)]

    # -- writing, derived data, uploads: StorageWrapper's, the primary's (a fallback's files,
    # by :meth:`owner`, are read-only) -----------------------------------------------------

    async def close(self) -> None:
        for storage in self.storages:
            await storage.close()


class _closing:
    """``storage.list(...)`` as an async context that closes the listing on exit."""

    def __init__(self, storage: Storage, prefix: str, limit: int, after: str) -> None:
        self.listing = storage.list(prefix, limit, after)

    async def __aenter__(self) -> AsyncIterator[FileInfo]:
        return self.listing

    async def __aexit__(self, *exc_info: object) -> None:
        close = getattr(self.listing, "aclose", None)
        if close is not None:
            await close()
