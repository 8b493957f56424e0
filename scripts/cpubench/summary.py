"""Reading the rounds of ``scripts/bench --cpu`` (pure: no I/O).

A run is a list of rounds; a round maps each contestant's name (and :data:`DRIVER`, the floor)
to its figures of that round. An absolute figure is the median over the rounds; a ratio is the
median of the per-round ratios (both figures from the same round, so load that moves between
rounds cancels out), given with the per-round values it comes from.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from scripts.cpubench.contestants import ASYNCIO, BASELINE, GRIDSERVE, PEERS, TORNADO_FLOOR

Figures = dict[str, float]
Round = dict[str, Figures]
DRIVER = "driver alone (the floor)"
T = TypeVar("T")


def rotated(items: Sequence[T], by: int) -> list[T]:
    """``items`` starting at ``by`` (modulo their count): round ``by``'s order."""
    if not items:
        return []
    k = by % len(items)
    return [*items[k:], *items[:k]]


def median_figures(rounds: Sequence[Round]) -> dict[str, Figures]:
    """Each contestant's figures, each the median over the rounds that measured it."""
    values: dict[str, dict[str, list[float]]] = {}
    for one in rounds:
        for name, figures in one.items():
            for key, value in figures.items():
                values.setdefault(name, {}).setdefault(key, []).append(value)
    return {
        name: {key: statistics.median(vs) for key, vs in figures.items()}
        for name, figures in values.items()
    }


@dataclass(frozen=True)
class Ratio:
    median: float
    rounds: tuple[float, ...]

    def __str__(self) -> str:
        return f"{self.median:.2f} (rounds: {', '.join(f'{r:.2f}' for r in self.rounds)})"


RoundRatio = Callable[[Round], float | None]


def median_ratio(rounds: Sequence[Round], ratio: RoundRatio) -> Ratio | None:
    """The median of ``ratio`` over the rounds where it is defined; None if it never is."""
    found = tuple(r for r in (ratio(one) for one in rounds) if r is not None)
    return Ratio(statistics.median(found), found) if found else None


def pair(a: str, b: str, key: str, key_b: str | None = None) -> RoundRatio:
    """``a``'s figure ``key`` over ``b``'s (``key_b``, default the same) in one round."""

    def ratio(one: Round) -> float | None:
        top, bottom = one.get(a, {}).get(key), one.get(b, {}).get(key_b or key)
        return None if top is None or not bottom else top / bottom

    return ratio


def to_best(a: str, others: Sequence[str], key: str, lowest: bool) -> RoundRatio:
    """``a``'s figure ``key`` over the best of ``others``' in one round (the lowest, for a
    cost; the highest, for a rate)."""

    def ratio(one: Round) -> float | None:
        top = one.get(a, {}).get(key)
        found = [one[o][key] for o in others if key in one.get(o, {})]
        if top is None or not found:
            return None
        best = min(found) if lowest else max(found)
        return top / best if best else None

    return ratio


def _sum(one: Round, names: Sequence[str], key: str) -> float | None:
    found = [one.get(n, {}).get(key) for n in names]
    return None if any(f is None for f in found) else sum(f for f in found if f is not None)


def over_sum(a: str, parts: Sequence[str], key: str) -> RoundRatio:
    """``a``'s figure ``key`` over the sum of ``parts``' in one round: a server against its
    floors added up (the driver's, and Tornado's own)."""

    def ratio(one: Round) -> float | None:
        top, total = one.get(a, {}).get(key), _sum(one, parts, key)
        return None if top is None or not total else top / total

    return ratio


def sum_over(parts: Sequence[str], b: str, key: str) -> RoundRatio:
    """The sum of ``parts``' figure ``key`` over ``b``'s in one round."""

    def ratio(one: Round) -> float | None:
        total, bottom = _sum(one, parts, key), one.get(b, {}).get(key)
        return None if total is None or not bottom else total / bottom

    return ratio


def sum_to_best(parts: Sequence[str], others: Sequence[str], key: str) -> RoundRatio:
    """The sum of ``parts``' figure ``key`` over the lowest of ``others``' in one round."""

    def ratio(one: Round) -> float | None:
        total = _sum(one, parts, key)
        best = [one[o][key] for o in others if key in one.get(o, {})]
        return None if total is None or not best or not min(best) else total / min(best)

    return ratio


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rounds: Sequence[Round], names: Sequence[str], stall: dict[str, float]) -> list[str]:
    """The medians, a row per contestant (the driver first), as scripts/bench --cpu prints."""
    medians = median_figures(rounds)
    lines = [
        f"{'':<26} {'MiB/s':>8} {'ms/MiB':>8} {'flt/MiB':>8} {'stall MiB':>9} "
        f"{'small/s':>8} {'ms/req':>8} {'ms/req16':>8} {'up ms/MiB':>10}"
    ]
    for name in [DRIVER, *names]:
        m = medians.get(name, {})
        lines.append(
            f"{name:<26} {_fmt(m.get('mbs'), '.0f'):>8} {_fmt(m.get('cpu_mib'), '.2f'):>8} "
            f"{_fmt(m.get('faults'), '.0f'):>8} {_fmt(stall.get(name), '.2f'):>9} "
            f"{_fmt(m.get('small_rps'), '.0f'):>8} {_fmt(m.get('cpu_req'), '.2f'):>8} "
            f"{_fmt(m.get('cpu_req16'), '.2f'):>8} "
            f"{_fmt(m.get('up_cpu'), '.2f'):>10}"
        )
    return lines


def ratio_lines(rounds: Sequence[Round], names: Sequence[str]) -> list[str]:
    """Issue 15's targets (in brackets) and the comparisons a run's contestants allow, each the
    median of its per-round ratios."""

    def r(ratio: RoundRatio) -> str:
        found = median_ratio(rounds, ratio)
        return "n/a" if found is None else str(found)

    g = GRIDSERVE
    peers = [p for p in PEERS if p in names]
    lines = [
        f"Ratios (each the median of the per-round ratios of {len(rounds)} rounds; issue 15's "
        "targets in brackets):",
        f"- full download, 1 client: MB/s gridserve/driver {r(pair(g, DRIVER, 'mbs'))} (>= 0.8)",
        f"- full download: CPU per MiB gridserve/driver {r(pair(g, DRIVER, 'cpu_mib'))} (<= 1.5)",
        f"- small files: CPU per request gridserve/best peer "
        f"{r(to_best(g, peers, 'cpu_req', lowest=True))} (<= 0.6)",
        f"- small files: CPU per request gridserve/driver floor "
        f"{r(pair(g, DRIVER, 'cpu_req'))} (<= 2)",
        f"- small files: req/s at 16 connections gridserve/best peer "
        f"{r(to_best(g, peers, 'small_rps', lowest=False))} (>= 1.5)",
        f"- small files at 16 connections: CPU per request gridserve/best peer "
        f"{r(to_best(g, peers, 'cpu_req16', lowest=True))}",
        f"- uploads: CPU per MiB gridserve/(driver + digests) {r(pair(g, DRIVER, 'up_cpu'))} "
        "(<= 1.2)",
    ]
    if TORNADO_FLOOR in names:
        both = (DRIVER, TORNADO_FLOOR)
        t = TORNADO_FLOOR
        lines += [
            "- the floors added up (the driver's + Tornado sending bytes from memory: a Tornado "
            "GridFS server that costs nothing of its own):",
            f"  full download: CPU per MiB (driver + Tornado)/driver "
            f"{r(sum_over(both, DRIVER, 'cpu_mib'))}; "
            f"gridserve/(driver + Tornado) {r(over_sum(g, both, 'cpu_mib'))}; Tornado/driver "
            f"{r(pair(t, DRIVER, 'cpu_mib'))}",
            f"  small files: CPU per request (driver + Tornado)/best peer "
            f"{r(sum_to_best(both, peers, 'cpu_req'))}; gridserve/(driver + Tornado) "
            f"{r(over_sum(g, both, 'cpu_req'))}; req/s at 16 connections of Tornado alone / "
            f"best peer {r(to_best(t, peers, 'small_rps', lowest=False))}",
        ]
    if ASYNCIO in names:
        lines.append(
            f"- uvloop/asyncio: CPU per MiB {r(pair(g, ASYNCIO, 'cpu_mib'))}; per small request "
            f"{r(pair(g, ASYNCIO, 'cpu_req'))}; small req/s {r(pair(g, ASYNCIO, 'small_rps'))}"
        )
    if BASELINE in names:
        b = BASELINE
        lines += [
            f"- gridserve/baseline: CPU per MiB {r(pair(g, b, 'cpu_mib'))}; per small request "
            f"{r(pair(g, b, 'cpu_req'))}; small req/s {r(pair(g, b, 'small_rps'))}; upload "
            f"CPU per MiB {r(pair(g, b, 'up_cpu'))}",
            f"- baseline: CPU per MiB / driver {r(pair(b, DRIVER, 'cpu_mib'))}; small req/s / "
            f"best peer {r(to_best(b, peers, 'small_rps', lowest=False))}",
        ]
    for name in names:
        if name.startswith("gridserve, --processes "):
            lines.append(
                f"- {name.split(', ', 1)[1]}: small req/s / one process "
                f"{r(pair(name, g, 'small_rps'))}, / best peer "
                f"{r(to_best(name, peers, 'small_rps', lowest=False))}; CPU per small request "
                f"/ one process {r(pair(name, g, 'cpu_req'))}"
            )
    return lines
