"""The chunk cache's eviction policy (gridserve/cachepolicy.py), without a server."""

from __future__ import annotations

from gridserve.cachepolicy import S3FIFO


def test_size_bound_holds_and_counts_evictions() -> None:
    cache: S3FIFO[int, bytes] = S3FIFO(1000)
    for key in range(50):
        assert cache.put(key, b"x" * 100, 100)
        assert cache.size <= 1000
    assert len(cache) == 10
    assert cache.evictions == 40
    assert cache.get(49) == b"x" * 100  # the newest is kept
    assert cache.get(0) is None


def test_an_entry_larger_than_the_capacity_is_not_admitted() -> None:
    cache: S3FIFO[str, bytes] = S3FIFO(100)
    assert cache.put("a", b"a", 50)
    assert not cache.put("big", b"b", 101)
    assert "big" not in cache
    assert cache.get("a") == b"a"
    assert cache.size == 50


def test_put_replaces_and_remove_drops_without_counting_an_eviction() -> None:
    cache: S3FIFO[str, str] = S3FIFO(100)
    cache.put("k", "one", 10)
    cache.put("k", "two", 20)
    assert (cache.get("k"), cache.size, len(cache)) == ("two", 20, 1)
    assert cache.remove("k")
    assert not cache.remove("k")
    assert (cache.size, len(cache), cache.evictions) == (0, 0, 0)


def test_one_big_scan_does_not_flush_the_hot_set() -> None:
    cache: S3FIFO[tuple[str, int], bytes] = S3FIFO(100 * 10)  # room for 100 blocks of 10
    hot = [("hot", n) for n in range(40)]
    for key in hot:
        cache.put(key, b"h", 10)
    for key in hot:  # read again: the hot set has proved itself
        assert cache.get(key) == b"h"
    # A scan of 1000 blocks (ten times the cache), read once each, while the hot set keeps
    # being read at a tenth of the scan's pace.
    hits = misses = 0
    for n in range(1000):
        cache.put(("scan", n), b"s", 10)
        key = hot[n % len(hot)]
        if n % 10 == 0:
            if cache.get(key) is None:
                misses += 1
                cache.put(key, b"h", 10)
            else:
                hits += 1
        assert cache.size <= 1000
    assert misses == 0, (hits, misses)
    assert all(key in cache for key in hot)


def test_plain_lru_would_have_flushed_it() -> None:
    """The same scan against an LRU of the same size: the test above can fail."""
    from collections import OrderedDict

    lru: OrderedDict[tuple[str, int], bytes] = OrderedDict()

    def put(key: tuple[str, int]) -> None:
        lru[key] = b""
        lru.move_to_end(key)
        while len(lru) > 100:
            lru.popitem(last=False)

    for n in range(40):
        put(("hot", n))
    for n in range(1000):
        put(("scan", n))
    assert not any(("hot", n) in lru for n in range(40))


def test_a_key_evicted_too_early_comes_back_into_the_main_queue() -> None:
    cache: S3FIFO[int, bytes] = S3FIFO(100)  # small queue: 10 bytes, one entry of 10
    cache.put(1, b"", 10)
    for key in range(2, 20):  # 1 leaves the small queue unread: a ghost
        cache.put(key, b"", 10)
    assert 1 not in cache
    cache.put(1, b"", 10)  # remembered: straight into the main queue
    for key in range(100, 200):  # a scan through the small queue does not evict it
        cache.put(key, b"", 10)
    assert 1 in cache


def test_peek_does_not_count_a_read() -> None:
    cache: S3FIFO[int, bytes] = S3FIFO(100)
    cache.put(1, b"once", 10)
    assert cache.peek(1) == b"once"  # stored and read by the same reader: read once
    for key in range(2, 30):
        cache.put(key, b"", 10)
    assert 1 not in cache  # left on probation, like any one-time read
    assert cache.peek(99) is None
