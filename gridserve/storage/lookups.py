"""A bounded in-memory cache of file documents that spares the database round trips, a plain
data structure with no I/O (tested without a database).

:class:`FileDocumentCache`
    File documents by id, each for ``ttl`` seconds. A GridFS file id names one immutable
    upload, so a cached document can only be stale if the file was deleted (the read then
    finds its chunks gone, and the storage re-checks) or edited in place by another tool
    (a rename or a metadata change shows up after at most ``ttl`` seconds). It evicts the
    least recently used entries beyond its bound.

(A ``ChunkLocator`` remembering the ids of chunks lived here until the chunk cache came: it
fetched a range read before by ``_id``, one query per chunk. That spared FerretDB's SQLite
backend a scan, but on MongoDB, where the ``files_id_1_n_1`` index makes a range query as cheap
as an ``_id`` lookup, it cost up to one query per chunk where one cursor per range does; and
chunks read again now come from :mod:`gridserve.storage.cache`. Product code follows MongoDB.)
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
