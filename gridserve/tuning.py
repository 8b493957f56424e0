"""glibc's allocator, set for a server that streams large buffers (``gridserve serve``).

Every database reply a stream reads (512 KiB of chunks), every upload batch it inserts (2 MiB)
is a fresh buffer of that size, freed soon after. glibc adapts its thresholds to what it sees
freed, and depending on the order of the first large frees it may settle on mapping and
unmapping such buffers, or on returning the top of its heap to the kernel and taking it again,
reply after reply: each time the kernel hands out zeroed pages, one page fault per 4 KiB. On the
fast benchmark database a server in that state took about 500 page faults and twice the CPU
per MiB sent (BENCHMARKS.rst, "CPU per byte"), and which state a server fell into changed from
start to start. :func:`tune_malloc` fixes the thresholds instead: buffers below
:data:`MMAP_THRESHOLD` come from the heap, and the heap keeps up to :data:`TRIM_THRESHOLD` of
free memory at its top, so the same pages serve reply after reply. The cost: the process may
hold up to that much freed memory instead of returning it at once.

An operator who sets any of glibc's own ``MALLOC_*`` variables or ``GLIBC_TUNABLES`` keeps
them: the daemon then changes nothing. Not glibc (musl, macOS): nothing to do.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 * 1024 * 1024
TRIM_THRESHOLD = 32 * 1024 * 1024
TOP_PAD = 4 * 1024 * 1024


def operator_tuned(environ: Mapping[str, str]) -> bool:
    """Whether the environment already tunes glibc's allocator."""
    return "GLIBC_TUNABLES" in environ or any(name.startswith("MALLOC_") for name in environ)


def tune_malloc(environ: Mapping[str, str] = os.environ) -> bool:
    """Sets the thresholds above (see the module docstring); True if they were set."""
    if operator_tuned(environ):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: musl's mallopt does nothing)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (M_TOP_PAD, TOP_PAD),
    )
    return all(mallopt(param, value) == 1 for param, value in settings)
