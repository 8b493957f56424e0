"""read_ahead: order, bounded look-ahead, errors in order, early close."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing

import pytest

from gridserve.storage.readahead import read_ahead


class Source:
    """Yields 0..count-1, recording how far it got and whether it was closed."""

    def __init__(self, count: int, fail_at: int | None = None) -> None:
        self.count = count
        self.fail_at = fail_at
        self.produced = 0
        self.closed = False

    async def items(self) -> AsyncGenerator[int, None]:
        try:
            for i in range(self.count):
                if i == self.fail_at:
                    raise ValueError(f"failed at {i}")
                await asyncio.sleep(0)
                self.produced = i + 1
                yield i
        finally:
            self.closed = True


async def test_yields_everything_in_order() -> None:
    source = Source(50)
    assert [i async for i in read_ahead(source.items(), 3)] == list(range(50))
    assert source.closed


async def test_fetches_ahead_but_no_more_than_depth() -> None:
    source = Source(100)
    async with aclosing(read_ahead(source.items(), 4)) as items:
        assert await items.__anext__() == 0
        for _ in range(20):
            await asyncio.sleep(0)  # the producer runs while the consumer is busy elsewhere
        # Item 0 is consumed; 4 wait in the queue; the producer holds 1 it cannot put yet.
        assert source.produced == 6
    await settle()
    assert source.closed
    assert source.produced == 6


async def test_an_error_arrives_after_the_items_before_it() -> None:
    source = Source(10, fail_at=5)
    received = []
    with pytest.raises(ValueError, match="failed at 5"):
        async for i in read_ahead(source.items(), 2):
            received.append(i)
    assert received == [0, 1, 2, 3, 4]
    assert source.closed


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_closing_early_stops_and_closes_the_source() -> None:
    source = Source(1000)
    async with aclosing(read_ahead(source.items(), 2)) as items:
        async for i in items:
            if i == 3:
                break
    await settle()  # the fetch in progress completes, then the source is closed
    assert source.closed
    assert source.produced <= 3 + 2 + 2


class SlowFetch:
    """A source whose fetch takes a while and must not be cancelled halfway."""

    def __init__(self) -> None:
        self.fetching = asyncio.Event()
        self.release = asyncio.Event()
        self.interrupted = False
        self.closed = False

    async def items(self) -> AsyncGenerator[int, None]:
        try:
            yield 0
            self.fetching.set()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.interrupted = True
                raise
            yield 1
            yield 2
        finally:
            self.closed = True


async def test_a_fetch_in_progress_is_let_finish_then_the_source_closed() -> None:
    source = SlowFetch()
    async with aclosing(read_ahead(source.items(), 1)) as items:
        assert await items.__anext__() == 0
        await source.fetching.wait()
    assert not source.closed  # the consumer is gone; the fetch is still under way
    source.release.set()
    await settle()
    assert source.closed and not source.interrupted


async def test_a_cancelled_consumer_closes_the_source() -> None:
    source = Source(10**6)

    async def consume() -> None:
        async with aclosing(read_ahead(source.items(), 2)) as items:
            async for _ in items:
                await asyncio.sleep(0.001)

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await settle()
    assert source.closed
