"""A storage in front of a storage: a bounded chunk cache shared by every request of a process,
with single-flight reads.

``CachedStorage(GridFSStorage(db), 256 * 1024 * 1024)`` mounts like any backend. Content is
cached in *blocks* at the wrapped storage's own boundaries (``cache_block_size(info)``: a GridFS
chunk), keyed on ``(cache_key(info), n)``, never on the ranges clients ask for, so any mix of
ranges shares the same entries. ``cache_key`` names content, not a name: a GridFS file id (an
upload is immutable), an S3 object's ETag; a backend whose ``cache_key`` is None (local disk,
which the kernel's page cache already serves) is passed straight through.

Reading a range walks its blocks in order. A block in the cache is a hit. A block being fetched
by another request is awaited, not fetched again (*single flight*): sixteen viewers of one clip
cost the database one read. A missing block starts a *fetch* of the run of missing blocks from
it as one range read of the wrapped storage (one query), in its own task; a reader half-way
through its window starts the next one, so the database works while the client receives. A
read's window starts at two blocks and doubles with each fetch up to ``fetch_window`` bytes:
a player's abandoned seek wastes little, a long download costs few queries. Each block is
handed over as soon as it is complete: a client streams what has arrived while the rest of its
range is still coming.

- A reader that leaves does not cancel a fetch: the others waiting on it still get their blocks
  (and the fetch is bounded by ``fetch_window``).
- A fetch that fails fails only the blocks it had not delivered, for the readers waiting on
  them; nothing of it is cached, and the next reader fetches again.
- Memory: the cache holds at most ``capacity`` bytes (S3-FIFO eviction,
  :mod:`gridserve.cachepolicy`: one big download or scan does not flush the hot set). A reader
  holds only the block it is sending, and a fetch only what it has not handed over yet (at
  most ``fetch_window``, read into the cache ahead of its reader), so slow readers never pin
  evicted entries.
- :meth:`delete` evicts the file's blocks (and a fetch under way caches nothing of it). A file
  deleted or replaced by another tool is found gone by the wrapped storage's lookup; a
  replacement has another id or ETag, so bytes of another revision are never served.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Hashable
from contextlib import aclosing
from dataclasses import dataclass

from gridserve.cachepolicy import S3FIFO
from gridserve.storage.base import CorruptFile, FileInfo, Storage, StorageUnavailable
from gridserve.storage.wrapper import StorageWrapper

DEFAULT_CAPACITY = 256 * 1024 * 1024
DEFAULT_FETCH_WINDOW = 4 * 1024 * 1024
FIRST_WINDOW_BLOCKS = 2  # a seek that is abandoned at once wastes little

BlockKey = tuple[Hashable, int]


@dataclass(frozen=True)
class CacheStats:
    """Counters since start: blocks served from the cache or another request's fetch
    (``hits``) or fetched for this request (``misses``), blocks evicted, bytes held, and bytes
    read from the wrapped storage."""

    hits: int
    misses: int
    evictions: int
    bytes: int
    storage_read_bytes: int


class _Fetch:
    """Blocks ``futures`` (by number) of one content, being read by one task."""

    __slots__ = ("admit", "content", "futures")

    def __init__(self, content: Hashable, futures: dict[int, asyncio.Future[bytes]]) -> None:
        self.content = content
        self.futures = futures
        self.admit = True  # false once the file was deleted: deliver, but cache nothing


class CachedStorage(StorageWrapper):
    """``inner`` with a chunk cache of ``capacity`` bytes in front of its reads (see the module
    docstring); everything else goes to ``inner`` unchanged. ``on_storage_read(n)`` is called
    with the size of each piece read from ``inner`` (the metrics' storage read counter)."""

    def __init__(
        self,
        inner: Storage,
        capacity: int = DEFAULT_CAPACITY,
        *,
        fetch_window: int = DEFAULT_FETCH_WINDOW,
        on_storage_read: Callable[[int], object] | None = None,
    ) -> None:
        super().__init__(inner)
        self.capacity = capacity
        self.fetch_window = fetch_window
        self.on_storage_read = on_storage_read
        self._blocks: S3FIFO[BlockKey, bytes] = S3FIFO(capacity)
        self._pending: dict[BlockKey, tuple[asyncio.Future[bytes], _Fetch]] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        self._hits = self._misses = self._read_bytes = 0

    @property
    def description(self) -> str:
        return f"{self.inner.description} with a {self.capacity / 2**20:g} MiB chunk cache"

    def stats(self) -> CacheStats:
        return CacheStats(
            self._hits, self._misses, self._blocks.evictions, self._blocks.size, self._read_bytes
        )

    # -- what the cache changes; everything else is ``inner``'s (StorageWrapper) -----------

    async def delete(self, info: FileInfo) -> None:
        try:
            await super().delete(info)
        finally:
            self.evict(info)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await super().close()

    def evict(self, info: FileInfo) -> None:
        """Drops ``info``'s blocks; a fetch of them under way delivers but caches nothing."""
        content = self.inner.cache_key(info)
        size = self.inner.cache_block_size(info)
        if content is None or size <= 0:
            return
        for n in range(-(-info.length // size)):
            self._blocks.remove((content, n))
        for (pending_content, _), (_, fetch) in self._pending.items():
            if pending_content == content:
                fetch.admit = False

    # -- reading ---------------------------------------------------------------------------

    async def read(
        self, info: FileInfo, start: int = 0, stop: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        stop = info.length if stop is None else min(stop, info.length)
        if start >= stop:
            return
        content = self.inner.cache_key(info)
        size = self.inner.cache_block_size(info)
        if content is None or size <= 0 or self.capacity <= 0:
            async with aclosing(self.inner.read(info, start, stop)) as pieces:
                async for piece in pieces:
                    yield piece
            return
        first, last = start // size, (stop - 1) // size
        widest = max(1, self.fetch_window // size)
        window = min(widest, FIRST_WINDOW_BLOCKS)
        frontier = first  # blocks before it were cached or on their way when last looked at
        mine: set[int] = set()  # blocks this read started fetching: misses, not hits
        for n in range(first, last + 1):
            if frontier <= last and frontier - n <= window // 2:  # fetch ahead
                frontier = self._fetch_run(info, content, size, frontier, last, window, mine)
                window = min(widest, window * 2)
            key = (content, n)
            # What this read fetched itself is read once so far: no second read for the
            # eviction policy (or every download would look popular).
            data = self._blocks.peek(key) if n in mine else self._blocks.get(key)
            if data is None:
                pending = self._pending.get(key)
                if pending is None:  # evicted since: fetch it again, with what follows
                    self._fetch_run(info, content, size, n, last, window, mine)
                    pending = self._pending[key]
                data = await asyncio.shield(pending[0])
                if n not in mine:
                    self._blocks.get(key)  # another's fetch: a read, for the eviction policy
            if n in mine:
                mine.discard(n)
                self._misses += 1
            else:
                self._hits += 1
            lo = start - n * size if n == first else 0
            hi = stop - n * size if n == last else len(data)
            yield data if lo == 0 and hi == len(data) else data[lo:hi]

    def _fetch_run(
        self,
        info: FileInfo,
        content: Hashable,
        size: int,
        begin: int,
        last: int,
        window: int,
        mine: set[int],
    ) -> int:
        """Starts fetching the blocks among ``begin .. begin + window - 1`` (not past ``last``)
        that are neither cached nor on their way, from the first of them to the next that is;
        returns the block after those looked at."""
        horizon = min(last, begin + window - 1)
        while begin <= horizon and self._present(content, begin):
            begin += 1
        if begin > horizon:
            return horizon + 1
        end = begin
        while end < horizon and not self._present(content, end + 1):
            end += 1
        futures = {m: asyncio.get_running_loop().create_future() for m in range(begin, end + 1)}
        fetch = _Fetch(content, futures)
        for m, future in futures.items():
            self._pending[(content, m)] = (future, fetch)
        mine.update(futures)
        task = asyncio.ensure_future(self._fetch(info, size, begin, end, fetch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return end + 1

    def _present(self, content: Hashable, n: int) -> bool:
        return (content, n) in self._blocks or (content, n) in self._pending

    async def _fetch(self, info: FileInfo, size: int, first: int, last: int, fetch: _Fetch) -> None:
        """Reads blocks ``first..last`` with one range read and hands each over when complete."""
        n = first
        buffer = bytearray()
        try:
            stop = min((last + 1) * size, info.length)
            async with aclosing(self.inner.read(info, first * size, stop)) as pieces:
                async for piece in pieces:
                    self._read_bytes += len(piece)
                    if self.on_storage_read is not None:
                        self.on_storage_read(len(piece))
                    want = min(size, info.length - n * size)
                    if not buffer and len(piece) == want:  # the usual case: one whole chunk
                        self._deliver(fetch, n, piece)
                        n += 1
                        continue
                    buffer += piece
                    while n <= last and len(buffer) >= (want := min(size, info.length - n * size)):
                        self._deliver(fetch, n, bytes(buffer[:want]))
                        del buffer[:want]
                        n += 1
            if n <= last:
                raise CorruptFile(f"file {info.id}: read ended at block {n} of {last}")
        except BaseException as exc:
            error = exc
            if not isinstance(exc, Exception):  # shutdown: the waiters get a retryable error
                error = StorageUnavailable("the chunk cache is shutting down")
            for m in list(fetch.futures):
                self._fail(fetch, m, error)
            if not isinstance(exc, Exception):
                raise

    def _deliver(self, fetch: _Fetch, n: int, data: bytes) -> None:
        future = fetch.futures.pop(n)
        self._pending.pop((fetch.content, n), None)
        if fetch.admit:
            self._blocks.put((fetch.content, n), data, len(data))
        future.set_result(data)

    def _fail(self, fetch: _Fetch, n: int, error: BaseException) -> None:
        future = fetch.futures.pop(n)
        self._pending.pop((fetch.content, n), None)
        future.set_exception(error)
        future.exception()  # retrieved: nobody may be waiting on this block any more
