"""Overlapping a storage's fetches with the consumer's sends.

``read_ahead(source, depth)`` runs ``source`` in its own task, at most ``depth`` items ahead of
the consumer: while the handler waits for the client to take chunk *k*, the database is
already answering for chunk *k + 1*. Memory stays bounded by ``depth`` items (plus the one the
source is producing). Errors of the source reach the consumer in order, after the items before
them. ``depth`` 0 fetches each item only when the consumer asks for it (no overlap beyond what
the consumer's socket buffer holds; one item in memory), still in the pump's own task: a
consumer cancelled mid-fetch never cancels the query.

When the consumer stops early (the client went away, or a range ended), the source is closed
once the fetch it is awaiting completes, in the background: a query is never cancelled halfway,
which would make the driver throw its pooled connection away (browsers abort requests every
time a player seeks).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import TypeVar

T = TypeVar("T")

_stopping: set[asyncio.Future[None]] = set()  # pumps finishing after their consumer left


class _End:
    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


async def read_ahead(source: AsyncGenerator[T, None], depth: int) -> AsyncGenerator[T, None]:
    """Yields what ``source`` yields, fetched up to ``depth`` items in advance (0: on demand)."""
    queue: asyncio.Queue[T | _End] = asyncio.Queue(max(1, depth))
    wanted = asyncio.Event() if depth <= 0 else None
    stop = False

    async def pump() -> None:
        try:
            if wanted is not None:
                await wanted.wait()
                if stop:
                    return
            async for item in source:
                if stop:
                    return
                await queue.put(item)
                if wanted is not None:
                    wanted.clear()
                    await wanted.wait()
                if stop:
                    return
        except Exception as exc:  # handed to the consumer, in order
            if not stop:
                await queue.put(_End(exc))
            return
        finally:
            await source.aclose()
        if not stop:
            await queue.put(_End(None))

    task = asyncio.ensure_future(pump())
    try:
        while True:
            if wanted is not None:
                wanted.set()
            item = await queue.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        if not task.done():
            stop = True
            while not queue.empty():  # unblocks a pump waiting to put
                queue.get_nowait()
            if wanted is not None:
                wanted.set()  # unblocks a pump waiting to be asked
            _stopping.add(task)
            task.add_done_callback(_stopping.discard)
