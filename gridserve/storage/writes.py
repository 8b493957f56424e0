"""What every backend's ``save`` needs to leave nothing behind when an upload ends early.

An upload can end at any await: the client leaves, the policy refuses it mid-stream, the
server shuts down. Two rules make the cleanup complete:

- A write that was sent is never abandoned half-way (:func:`settle`): cancelling the task that
  awaits an ``insert_many`` or an ``upload_part`` would return at once while the server still
  applies the write, and a cleanup that ran meanwhile would miss what it wrote.
- Cleanups outlive the request (:class:`Cleanups`): they run as tasks of the storage, which
  ``close()`` awaits (bounded) before it closes its client, so a shutdown mid-upload still
  removes what that upload wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
SETTLE_SECONDS = 30.0
log = logging.getLogger("gridserve.storage")


async def settle(awaitable: Awaitable[T], grace: float = SETTLE_SECONDS) -> T:
    """Awaits ``awaitable`` so that a cancellation of the caller does not interrupt it: the
    caller's ``CancelledError`` is raised only once the write has landed or failed (at most
    ``grace`` seconds later), so the caller's cleanup sees everything it did."""
    task = asyncio.ensure_future(awaitable)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([task], timeout=grace)
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: the caller is cancelled, its cleanup follows
        raise


class Cleanups:
    """Cleanup tasks of one storage and the saves in flight; :meth:`drain` awaits them all."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[None]] = set()
        self.saving = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def save_started(self) -> None:
        self.saving += 1
        self._idle.clear()

    def save_ended(self) -> None:
        self.saving -= 1
        if self.saving == 0:
            self._idle.set()

    async def run(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        """Runs ``cleanup`` to its end even if the caller is cancelled meanwhile (the task
        stays registered until done, so :meth:`drain` waits for it)."""
        task = asyncio.ensure_future(cleanup())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)

    def spawn(self, cleanup: Awaitable[None]) -> None:
        """Runs ``cleanup`` in the background (a retry after the storage comes back)."""
        task = asyncio.ensure_future(cleanup)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float) -> bool:
        """Waits for the saves in flight to end and the cleanups to finish, at most ``timeout``
        seconds; cancels what is left. True if everything ended."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        left = max(0.0, deadline - loop.time())
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=max(left, 0.001))
        clean = self.saving == 0 and not self._tasks
        for task in list(self._tasks):
            task.cancel()
        if not clean:
            log.warning(
                "closing with %d upload(s) and %d cleanup(s) unfinished",
                self.saving,
                len(self._tasks),
            )
        return clean
