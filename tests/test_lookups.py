"""The file-document cache and the chunk locator: pure data structures, no database."""

from __future__ import annotations

from gridserve.storage.lookups import ChunkLocator, FileDocumentCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_file_cache_serves_within_ttl_and_not_after() -> None:
    clock = Clock()
    cache: FileDocumentCache[str] = FileDocumentCache(5.0, clock=clock)
    cache.put("id1", "doc1")
    clock.now += 4.9
    assert cache.get("id1") == "doc1"
    clock.now += 0.1
    assert cache.get("id1") is None
    assert len(cache) == 0  # an expired entry is dropped when met


def test_file_cache_zero_ttl_stores_nothing() -> None:
    cache: FileDocumentCache[str] = FileDocumentCache(0)
    cache.put("id1", "doc1")
    assert cache.get("id1") is None
    assert len(cache) == 0


def test_file_cache_bound_evicts_least_recently_used() -> None:
    cache: FileDocumentCache[int] = FileDocumentCache(60, max_entries=3)
    for key in range(3):
        cache.put(key, key)
    assert cache.get(0) == 0  # 0 is now the most recently used
    cache.put(3, 3)
    assert cache.get(1) is None
    assert [cache.get(k) for k in (0, 2, 3)] == [0, 2, 3]
    assert len(cache) == 3


def test_file_cache_forget_and_refresh() -> None:
    clock = Clock()
    cache: FileDocumentCache[str] = FileDocumentCache(5.0, clock=clock)
    cache.put("id1", "old")
    cache.forget("id1")
    assert cache.get("id1") is None
    cache.forget("never there")
    cache.put("id1", "old")
    clock.now += 4
    cache.put("id1", "new")  # a put restarts the entry's lifetime
    clock.now += 4
    assert cache.get("id1") == "new"


def test_locator_returns_ids_only_when_the_whole_range_is_known() -> None:
    locator = ChunkLocator()
    for n in (0, 1, 2, 4):
        locator.learn("f", n, f"c{n}")
    assert locator.locate("f", 0, 2) == ["c0", "c1", "c2"]
    assert locator.locate("f", 4, 4) == ["c4"]
    assert locator.locate("f", 2, 4) is None  # chunk 3 never seen
    assert locator.locate("other", 0, 0) is None
    assert len(locator) == 4
    locator.learn("f", 1, "c1")  # learning again does not count twice
    assert len(locator) == 4


def test_locator_bound_evicts_whole_files_least_recently_used() -> None:
    locator = ChunkLocator(max_chunks=5)
    for n in range(3):
        locator.learn("a", n, n)
    for n in range(2):
        locator.learn("b", n, n)
    assert locator.locate("a", 0, 2) == [0, 1, 2]  # a is now more recent than b
    locator.learn("c", 0, 0)
    assert locator.locate("b", 0, 0) is None
    assert locator.locate("a", 0, 2) == [0, 1, 2]
    assert locator.locate("c", 0, 0) == [0]
    assert len(locator) == 4


def test_locator_keeps_the_newest_chunk_of_a_file_larger_than_its_bound() -> None:
    locator = ChunkLocator(max_chunks=3)
    for n in range(10):
        locator.learn("big", n, n)
        assert len(locator) <= 3
    assert locator.locate("big", 9, 9) == [9]


def test_locator_forget_and_disabled() -> None:
    locator = ChunkLocator()
    locator.learn("f", 0, "c0")
    locator.forget("f")
    locator.forget("f")
    assert locator.locate("f", 0, 0) is None
    assert len(locator) == 0
    disabled = ChunkLocator(max_chunks=0)
    disabled.learn("f", 0, "c0")
    assert disabled.locate("f", 0, 0) is None
