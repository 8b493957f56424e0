"""The file-document cache: a pure data structure, no database."""

from __future__ import annotations

from gridserve.storage.lookups import FileDocumentCache


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
