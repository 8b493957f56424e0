"""Two bounded in-memory caches that spare the database round trips and scans, plain data
structures with no I/O (tested without a database).

:class:`FileDocumentCache`
    File documents by id, each for ``ttl`` seconds. A GridFS file id names one immutable
    upload, so a cached document can only be stale if the file was deleted (the read then
    finds its chunks gone, and the storage re-checks) or edited in place by another tool
    (a rename or a metadata change shows up after at most ``ttl`` seconds).

:class:`ChunkLocator`
    The ``_id`` of each chunk ``n`` of a file, learned from the chunks a read returns. Chunks
    are write-once, so a known ``_id`` lets a later read of the same bytes fetch each chunk by
    ``_id``: the one query every MongoDB-compatible server answers from its primary key, where
    a ``files_id``/``n`` range needs the ``files_id_1_n_1`` index (and FerretDB v1 on SQLite
    scans the whole chunks collection for it). The locator is a hint: a chunk fetched by
    ``_id`` is checked against the file id and ``n`` it should have.

Both evict the least recently used entries beyond their bound.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class FileDocumentCache(Generic[V]):
    """Values by key for ``ttl`` seconds, at most ``max_entries`` of them. ``ttl <= 0``
    disables the cache (``get`` always misses, ``put`` stores nothing)."""

    def __init__(
        self,
        ttl: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: Hashable, value: V) -> None:
        if self.ttl <= 0 or self.max_entries <= 0:
            return
        self._entries[key] = (self._clock() + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, key: Hashable) -> None:
        self._entries.pop(key, None)


class ChunkLocator:
    """Chunk ids by file id and chunk number, at most ``max_chunks`` in all (about 130 bytes
    each with their ObjectIds: 13 MB for 100,000). ``max_chunks <= 0`` disables it."""

    def __init__(self, max_chunks: int = 100_000) -> None:
        self.max_chunks = max_chunks
        self._files: OrderedDict[Hashable, dict[int, object]] = OrderedDict()
        self._count = 0

    def __len__(self) -> int:
        """How many chunk ids are held."""
        return self._count

    def learn(self, file_id: Hashable, n: int, chunk_id: object) -> None:
        if self.max_chunks <= 0:
            return
        known = self._files.get(file_id)
        if known is None:
            known = self._files[file_id] = {}
        else:
            self._files.move_to_end(file_id)
        if n not in known:
            self._count += 1
        known[n] = chunk_id
        while self._count > self.max_chunks:
            oldest, dropped = next(iter(self._files.items()))
            if oldest == file_id and len(self._files) == 1:
                # One file larger than the bound: drop its other chunks, keep this one.
                self._count -= len(dropped) - 1
                self._files[file_id] = {n: chunk_id}
                break
            del self._files[oldest]
            self._count -= len(dropped)

    def locate(self, file_id: Hashable, first: int, last: int) -> list[object] | None:
        """The ids of chunks ``first..last`` in order, or None unless every one is known."""
        known = self._files.get(file_id)
        if known is None:
            return None
        found = []
        for n in range(first, last + 1):
            chunk_id = known.get(n)
            if chunk_id is None:
                return None
            found.append(chunk_id)
        self._files.move_to_end(file_id)
        return found

    def forget(self, file_id: Hashable) -> None:
        dropped = self._files.pop(file_id, None)
        if dropped is not None:
            self._count -= len(dropped)
