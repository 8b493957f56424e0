"""S3-FIFO: a scan-resistant eviction policy over entries with sizes, a pure data structure.

S3-FIFO (Yang et al., SOSP 2023) keeps three FIFO queues: a *small* queue that every new entry
enters (a tenth of the capacity), a *main* queue for entries that proved themselves, and a
*ghost* queue of keys only, recently evicted from the small one. An entry read again while it
sits in the small queue moves to the main queue when it reaches the small queue's end; one read
once (a scan, a single download) leaves after a short stay without touching the main queue.
A key found in the ghost queue (it was evicted too early) enters the main queue directly. In the
main queue an entry read since it last passed the end gets another round (its count lowered);
the others are evicted. So one big scan never flushes the hot set, and a hit costs one counter
increment, no list reordering.

:class:`S3FIFO` bounds the *sum of the sizes* (bytes, for the chunk cache), not the number of
entries. An entry larger than the capacity is not admitted. The caller learns what was evicted
through :attr:`S3FIFO.evictions` and :attr:`S3FIFO.size`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MAX_FREQUENCY = 3  # reads remembered per entry: enough to tell hot from once-read


class _Entry(Generic[V]):
    __slots__ = ("frequency", "size", "value")

    def __init__(self, value: V, size: int) -> None:
        self.value = value
        self.size = size
        self.frequency = 0


class S3FIFO(Generic[K, V]):
    """Values by key, the sum of their sizes at most ``capacity``.

    ``get(key)`` returns the value (and counts the read) or None, ``peek(key)`` the same
    without counting; ``put(key, value, size)``
    stores it (replacing an entry of that key), evicting what the policy chooses;
    ``remove(key)`` drops one entry. ``small_ratio`` is the share of the capacity the small
    queue may hold before it gives its oldest entries up (0.1 in the paper).
    """

    def __init__(self, capacity: int, small_ratio: float = 0.1) -> None:
        self.capacity = max(0, capacity)
        self.small_capacity = max(1, int(self.capacity * small_ratio))
        self._small: OrderedDict[K, _Entry[V]] = OrderedDict()  # oldest first
        self._main: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._ghost: OrderedDict[K, None] = OrderedDict()
        self._small_size = 0
        self._main_size = 0
        self.evictions = 0

    @property
    def size(self) -> int:
        """The sum of the sizes of the entries held."""
        return self._small_size + self._main_size

    def __len__(self) -> int:
        return len(self._small) + len(self._main)

    def __contains__(self, key: object) -> bool:
        return key in self._small or key in self._main

    def get(self, key: K) -> V | None:
        entry = self._small.get(key) or self._main.get(key)
        if entry is None:
            return None
        entry.frequency = min(entry.frequency + 1, MAX_FREQUENCY)
        return entry.value

    def peek(self, key: K) -> V | None:
        """The value, without counting a read (for the reader that just stored it)."""
        entry = self._small.get(key) or self._main.get(key)
        return None if entry is None else entry.value

    def put(self, key: K, value: V, size: int) -> bool:
        """Stores ``value`` as ``key``; False (and nothing stored) if it can never fit."""
        remembered = key in self._ghost
        self.remove(key)
        if size > self.capacity:
            return False
        entry = _Entry(value, size)
        if remembered:
            self._main[key] = entry
            self._main_size += size
        else:
            self._small[key] = entry
            self._small_size += size
        while self.size > self.capacity:
            if self._small_size > self.small_capacity or not self._main:
                self._evict_small()
            else:
                self._evict_main()
        return True

    def remove(self, key: K) -> bool:
        """Drops ``key``'s entry (not counted as an eviction); whether there was one."""
        self._ghost.pop(key, None)
        entry = self._small.pop(key, None)
        if entry is not None:
            self._small_size -= entry.size
            return True
        entry = self._main.pop(key, None)
        if entry is not None:
            self._main_size -= entry.size
            return True
        return False

    def _evict_small(self) -> None:
        key, entry = self._small.popitem(last=False)
        self._small_size -= entry.size
        if entry.frequency > 0:  # read again while on probation: it joins the main queue
            entry.frequency = 0
            self._main[key] = entry
            self._main_size += entry.size
            return
        self.evictions += 1
        self._ghost[key] = None
        # The ghost remembers about as many keys as the main queue holds entries.
        while len(self._ghost) > max(16, len(self._main)):
            self._ghost.popitem(last=False)

    def _evict_main(self) -> None:
        while True:
            key, entry = self._main.popitem(last=False)
            if entry.frequency > 0:  # read since its last round: another round
                entry.frequency -= 1
                self._main[key] = entry
                continue
            self._main_size -= entry.size
            self.evictions += 1
            return
