"""A storage in front of a storage: :class:`StorageWrapper` forwards every method of the
interface to the storage it wraps, ``inner``, so that a wrapper (the chunk cache,
:mod:`gridserve.storage.cache`; the fallback chain, :mod:`gridserve.storage.fallback`)
overrides only what it changes, and a method added to the interface is forwarded in one place.

What goes where by default:

- Lookups, reads and writes (``resolve``, ``read``, ``list``, ``revisions``, ``save``,
  ``ping``) and resumable uploads go to ``inner``: the storage that takes the writes
  (``gridserve sweep`` follows ``inner`` down to it). ``keeps_revisions`` and ``description``
  are ``inner``'s; ``close`` closes it (a wrapper owns what it wraps).
- What belongs to one file goes to :meth:`StorageWrapper.owner` of that file, the wrapped
  storage that holds it (``inner`` unless a subclass knows better): derived data is read there;
  ``delete`` and the writes of derived data happen only when that is ``inner``. A file that
  another storage holds is read-only through the wrapper: ``delete`` raises
  :class:`FileNotFound`, ``update_metadata``, ``put_derived`` and ``delete_derived`` keep
  nothing.
- ``cache_key`` and ``cache_block_size`` keep the defaults of :class:`Storage` (None: a chunk
  cache in front of a wrapper passes it straight through): what a wrapper reads may come from
  any storage it wraps, so it has no single name for the content.
- ``read_buffers`` keeps the default too: it goes through the wrapper's own ``read`` (a cache's
  read serves from the cache; forwarding it to ``inner`` would bypass what the wrapper adds).

The keyword-only options of ``save`` and of the upload methods are passed on unchanged; their
contract is the interface's (:mod:`gridserve.storage.base`).
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gridserve.storage.base import Derived, FileInfo, FileNotFound, Storage

if TYPE_CHECKING:
    from gridserve.storage.resumable import UploadState


class StorageWrapper(Storage):
    """``inner`` behind this storage: every method forwards to it (see the module docstring);
    a subclass overrides what it changes, and :meth:`owner` where it wraps several storages."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner

    def owner(self, info: FileInfo) -> Storage:
        """The wrapped storage that holds ``info``: ``inner`` here; writes go only to it."""
        return self.inner

    @property
    def keeps_revisions(self) -> bool:  # type: ignore[override]
        return self.inner.keeps_revisions

    @property
    def description(self) -> str:
        return self.inner.description

    # -- lookups, reads, writes: the wrapped storage's ---------------------------------------

    async def resolve(self, key: str, revision: int | None = None) -> FileInfo:
        return await self.inner.resolve(key, revision)

    def read(
        self, info: FileInfo, start: int = 0, stop: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        return self.inner.read(info, start, stop)

    def list(self, prefix: str = "", limit: int = 100, after: str = "") -> AsyncIterator[FileInfo]:
        return self.inner.list(prefix, limit, after)

    async def revisions(self, name: str) -> builtins.list[FileInfo]:
        return await self.inner.revisions(name)

    async def save(self, name: str, chunks: AsyncIterable[bytes], **options: Any) -> FileInfo:
        return await self.inner.save(name, chunks, **options)

    async def delete(self, info: FileInfo) -> None:
        holder = self.owner(info)
        if holder is not self.inner:
            raise FileNotFound(f"{info.filename} is only in read-only {holder.description}")
        await self.inner.delete(info)

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()

    # -- derived data (media facts, posters): the holder's, written only through ``inner`` ---

    async def update_metadata(self, info: FileInfo, patch: Mapping[str, Any]) -> None:
        if self.owner(info) is self.inner:
            await self.inner.update_metadata(info, patch)

    async def media_of(self, info: FileInfo) -> Mapping[str, Any] | None:
        return await self.owner(info).media_of(info)

    async def put_derived(self, info: FileInfo, name: str, data: bytes, content_type: str) -> None:
        if self.owner(info) is self.inner:
            await self.inner.put_derived(info, name, data, content_type)

    async def get_derived(self, info: FileInfo, name: str) -> Derived | None:
        return await self.owner(info).get_derived(info, name)

    async def delete_derived(self, info: FileInfo) -> None:
        if self.owner(info) is self.inner:
            await self.inner.delete_derived(info)

    async def derived_names(self, info: FileInfo) -> builtins.list[str]:
        return await self.owner(info).derived_names(info)

    # -- resumable uploads: the wrapped storage's, which takes the writes --------------------

    async def begin_upload(self, name: str, **options: Any) -> UploadState:
        return await self.inner.begin_upload(name, **options)

    async def upload_state(self, upload_id: str) -> UploadState:
        return await self.inner.upload_state(upload_id)

    async def append_upload(
        self, upload_id: str, offset: int, chunks: AsyncIterable[bytes], **options: Any
    ) -> UploadState:
        return await self.inner.append_upload(upload_id, offset, chunks, **options)

    async def complete_upload(self, upload_id: str, **options: Any) -> FileInfo:
        return await self.inner.complete_upload(upload_id, **options)

    async def terminate_upload(self, upload_id: str) -> None:
        await self.inner.terminate_upload(upload_id)

    async def expired_uploads(self, now: datetime, limit: int = 1000) -> builtins.list[UploadState]:
        return await self.inner.expired_uploads(now, limit)
