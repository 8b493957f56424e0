"""What a scenario of ``scripts/bench --cpu`` is: the figures of one server, or of the driver
alone (the floor), for one round. The runner (``scripts/bench_cpu.py``) runs each scenario's
contestants one after the other within a round, the driver among them, the order rotating from
round to round; every server runs throughout, so each round compares them under the load of
the same minute."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scripts.benchtools import Server

Figures = dict[str, float]


@dataclass(frozen=True)
class Setup:
    """What every scenario of a run shares."""

    uri: str
    prefix: str  # databases are f"{prefix}_{dataset}" (scripts.benchdata.seed)
    seconds: float  # about how long one contestant's share of a round lasts
    upload: bytes  # what the upload scenario sends

    def db(self, dataset: str) -> str:
        return f"{self.prefix}_{dataset}"


@dataclass(frozen=True)
class Scenario:
    """``measure(setup, server)`` gives one server's figures of a round; ``floor(setup)`` the
    driver's (None: no floor); ``applies(name)`` which contestants take part; ``warm_up``
    runs once per server before the first round. Servers of ``dataset`` serve it."""

    name: str
    dataset: str
    measure: Callable[[Setup, Server], Figures]
    floor: Callable[[Setup], Figures] | None = None
    warm_up: Callable[[Setup, Server], Any] | None = None
    applies: Callable[[str], bool] = lambda name: True
