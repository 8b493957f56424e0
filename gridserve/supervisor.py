"""Pre-forked workers and the master that watches them (``--processes N``).

:func:`fork_workers` forks ``count`` workers from the calling (master) process and returns in
each worker with its number; in the master it supervises them and returns only once they are
all gone. The contract, as operators (systemd, logrotate) rely on it:

- **SIGHUP** to the master runs its ``on_hup`` callback (reopen its own log files) and is
  forwarded to every worker (which reopen theirs); the master keeps running.
- **SIGTERM/SIGINT** to the master is forwarded to every worker as SIGTERM; each finishes its
  in-flight responses and exits; the master then exits with 0 when every worker did.
- A worker never outlives its master: on Linux each asks the kernel for SIGTERM when its parent
  dies (``PR_SET_PDEATHSIG``), so even a SIGKILLed master leaves no orphan serving requests.
- A worker that dies on its own is restarted (at most ``max_restarts`` times in all), and
  ``on_exit(pid)`` runs for it (the metrics drop its live gauges).

:func:`worker_id` tells code in a worker which one it is (None in a single process).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("gridserve")

PR_SET_PDEATHSIG = 1
_worker: int | None = None


def worker_id() -> int | None:
    """This process's worker number (0-based) under :func:`fork_workers`, else None."""
    return _worker


def die_with_parent(parent: int) -> None:
    """Asks Linux to send SIGTERM to this process when its parent exits; exits at once if the
    parent ``parent`` is already gone (it may die between the fork and the request)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent:
        os._exit(0)


def fork_workers(
    count: int,
    *,
    on_hup: Callable[[], None] = lambda: None,
    on_exit: Callable[[int], None] = lambda pid: None,
    max_restarts: int = 100,
) -> tuple[int | None, int]:
    """Forks ``count`` workers. Returns ``(number, 0)`` in a worker, and ``(None, status)`` in
    the master once every worker has exited (status 0 when they all exited cleanly after a
    SIGTERM/SIGINT, else 1)."""
    global _worker
    master = os.getpid()
    children: dict[int, int] = {}  # pid -> worker number
    stopping = False

    def spawn(number: int) -> bool:
        pid = os.fork()
        if pid == 0:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            # A reload before the worker's loop listens must not kill it (its loop's handler
            # replaces this one).
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            die_with_parent(master)
            return True
        children[pid] = number
        return False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if signum == signal.SIGHUP:
            on_hup()
        else:
            stopping = True
            signum = signal.SIGTERM
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    for number in range(count):
        if spawn(number):
            _worker = number
            return number, 0

    status = 0
    restarts = 0
    while children:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        if pid not in children:
            continue
        number = children.pop(pid)
        on_exit(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        if stopping:
            status = status or (1 if code != 0 else 0)
            continue
        log.warning("worker %d (pid %d) exited with %d", number, pid, code)
        if restarts >= max_restarts:
            log.error("too many worker restarts; stopping")
            forward(signal.SIGTERM, None)
            status = 1
            continue
        restarts += 1
        if spawn(number):
            _worker = number
            return number, 0
    if not stopping:
        status = 1
    return None, status
