"""In-flight request tracking, so a shutdown can wait for responses that are still streaming."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


class RequestTracker:
    """Counts requests between their handler's creation and its finish (or disconnect)."""

    def __init__(self) -> None:
        self._active: set[int] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def started(self, handler: Any) -> None:
        self._active.add(id(handler))
        self._idle.clear()

    def finished(self, handler: Any) -> None:
        self._active.discard(id(handler))
        if not self._active:
            self._idle.set()

    @property
    def active(self) -> int:
        return len(self._active)

    async def drained(self, timeout: float) -> bool:
        """Waits until no request is in flight, at most ``timeout`` seconds; True if none is."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        return not self._active
