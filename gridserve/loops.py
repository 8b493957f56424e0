"""The event loop the daemon runs on: ``--loop uvloop`` (the default when uvloop is installed,
``pip install gridserve[fast]``) or ``--loop asyncio`` (the standard library's).

uvloop's transports and timers cost less CPU per request and per byte than asyncio's (see
BENCHMARKS.rst, "CPU per byte"); nothing else changes: Tornado, PyMongo and aiobotocore run
on either.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
LOOPS = ("uvloop", "asyncio")


def default_loop() -> str:
    """``uvloop`` when it can be imported, else ``asyncio``."""
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"


def check_loop(name: str) -> None:
    """Raises ValueError if the loop ``name`` cannot be used here."""
    if name not in LOOPS:
        raise ValueError(f"--loop {name!r} is not one of {', '.join(LOOPS)}")
    if name == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ValueError("--loop uvloop: uvloop is not installed (pip install gridserve[fast])")


def run(main: Coroutine[Any, Any, T], loop: str) -> T:
    """``asyncio.run(main)`` on the event loop named ``loop`` (one of :data:`LOOPS`)."""
    if loop == "uvloop":
        uvloop: Any = importlib.import_module("uvloop")
        result: T = uvloop.run(main)
        return result
    return asyncio.run(main)
