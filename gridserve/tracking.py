"""In-flight request tracking, so a shutdown can wait for responses that are still streaming,
and :class:`DisconnectWatch`, which notices a client that left while its request waits.

Tornado learns that a client left only when it reads or writes the socket: not while
``prepare()`` awaits the storage (``HTTP1Connection`` reads nothing until the handler is
ready for the body), not while ``data_received`` waits for the storage to take a chunk, and
not while a download awaits its next chunk. :class:`DisconnectWatch` looks at the socket
itself every ``interval`` seconds, with ``poll(POLLRDHUP)`` on Linux (which sees the client's
FIN even behind body bytes nobody read yet), else a non-blocking ``MSG_PEEK``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import select
import socket
import weakref
from collections.abc import Callable
from typing import Any

CLIENT_CLOSED = 499  # nginx's status for a request whose client left before the response
DISCONNECT_POLL_SECONDS = 0.5
_GONE_EVENTS = (
    getattr(select, "POLLRDHUP", 0) | getattr(select, "POLLHUP", 0) | getattr(select, "POLLERR", 0)
)


def peer_gone(sock: socket.socket) -> bool:
    """True when the client closed (or reset) its end of ``sock``, even if body bytes it sent
    before are still unread. A client that only half-closes (``shutdown(SHUT_WR)``) after its
    request counts as gone: HTTP clients do not do that while waiting for an answer."""
    fd = sock.fileno()
    if fd < 0:
        return True
    if hasattr(select, "POLLRDHUP") and hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, _GONE_EVENTS)
        return bool(poller.poll(0))
    try:  # no POLLRDHUP: only an EOF with nothing unread before it is seen
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


class DisconnectWatch:
    """Calls ``on_gone`` once, on the loop, when the client of ``sock`` has left; checks every
    ``interval`` seconds until :meth:`stop`. A request shorter than ``interval`` costs one timer.
    """

    def __init__(
        self,
        sock: socket.socket,
        on_gone: Callable[[], None],
        interval: float = DISCONNECT_POLL_SECONDS,
    ) -> None:
        self._sock = sock
        self._on_gone: Callable[[], None] | None = on_gone
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(interval, self._check)

    def _check(self) -> None:
        self._timer = None
        if self._on_gone is None:
            return
        if self._sock.fileno() < 0:
            self._on_gone = None  # closed by the server itself, which knows
            return
        try:
            gone = peer_gone(self._sock)
        except (OSError, ValueError):
            gone = True
        if not gone:
            self._timer = self._loop.call_later(self._interval, self._check)
            return
        callback, self._on_gone = self._on_gone, None
        callback()

    def stop(self) -> None:
        self._on_gone = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class RequestTracker:
    """Counts requests between their handler's creation and its finish (or disconnect)."""

    def __init__(self) -> None:
        self._active: set[int] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._abandoned: weakref.WeakSet[Any] = weakref.WeakSet()
        self.memory = IdleTrim()

    def started(self, handler: Any) -> None:
        self._active.add(id(handler))
        self._idle.clear()
        self.memory.hold()

    def finished(self, handler: Any) -> None:
        if id(handler) in self._active:
            self._active.discard(id(handler))
            self.memory.release()
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


# -- giving memory back ---------------------------------------------------------------------

TRIM_AFTER_SECONDS = 1.0


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None
    return trim


class IdleTrim:
    """Gives memory back to the operating system once no request is in flight.

    An upload holds up to a storage batch (2 MiB on GridFS) while it runs; glibc keeps what
    requests freed in its heaps, so after a burst (of uploads, or of abandoned ones) the
    process would keep the burst's peak as resident memory for good. ``malloc_trim(0)``, run
    ``TRIM_AFTER_SECONDS`` after the last request ended (once per idle period, after a full
    garbage collection), returns it.
    Elsewhere than glibc, a no-op."""

    def __init__(self) -> None:
        self._trim = _malloc_trim()
        self._timer: asyncio.TimerHandle | None = None
        self._holders = 0
        self.trims = 0

    def hold(self) -> None:
        """Something that uses memory began (a request, an upload's storage write)."""
        self._holders += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def release(self) -> None:
        """... and ended; the last one schedules the trim."""
        self._holders -= 1
        if self._holders > 0 or self._trim is None or self._timer is not None:
            return
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to schedule on
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(TRIM_AFTER_SECONDS, self._release)

    def _release(self) -> None:
        self._timer = None
        if self._trim is not None:
            # An upload that failed leaves cycles (handler, task, exception, traceback, frames
            # holding its buffers) that only a full collection frees; at idle it costs little.
            gc.collect()
            self._trim(0)
            self.trims += 1
