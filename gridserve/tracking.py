"""In-flight request tracking, so a shutdown can wait for responses that are still streaming."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import Any

CLIENT_CLOSED = 499  # nginx's status for a request whose client left before the response


class RequestTracker:
    """Counts requests between their handler's creation and its finish (or disconnect)."""

    def __init__(self) -> None:
        self._active: set[int] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._abandoned: weakref.WeakSet[Any] = weakref.WeakSet()

    def started(self, handler: Any) -> None:
        self._active.add(id(handler))
        self._idle.clear()

    def finished(self, handler: Any) -> None:
        self._active.discard(id(handler))
        self._abandoned.discard(handler)
        if not self._active:
            self._idle.set()

    def abandoned(self, handler: Any) -> None:
        """The client of ``handler`` went away before its response was finished: a shutdown
        does not wait for it (its handler may still be awaiting the storage)."""
        self.finished(handler)
        self._abandoned.add(handler)

    def close_abandoned(self) -> int:
        """Finishes, as 499, the handlers whose client left and that are still running, at
        the end of a shutdown: the loop is about to cancel them, and Tornado answers (and logs)
        a cancelled unfinished handler as a 500. Returns how many there were."""
        count = 0
        for handler in list(self._abandoned):
            self._abandoned.discard(handler)
            if handler._finished:
                continue
            count += 1
            with contextlib.suppress(Exception):
                handler.clear()
                handler.set_status(CLIENT_CLOSED, reason="Client Closed Request")
                handler.finish()
        return count

    @property
    def active(self) -> int:
        return len(self._active)

    async def drained(self, timeout: float) -> bool:
        """Waits until no request is in flight, at most ``timeout`` seconds; True if none is."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        return not self._active
