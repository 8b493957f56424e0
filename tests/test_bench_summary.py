"""scripts/bench --cpu's reading of its rounds (scripts.cpubench.summary): pure functions."""

from __future__ import annotations

import pytest

from scripts.cpubench.contestants import GRIDSERVE, PEERS, TORNADO_FLOOR
from scripts.cpubench.summary import (
    DRIVER,
    median_figures,
    median_ratio,
    over_sum,
    pair,
    rotated,
    sum_over,
    sum_to_best,
    table,
    to_best,
)

AIOHTTP, TORNADO = PEERS[1], PEERS[0]


def test_rounds_rotate_so_each_contestant_leads_once() -> None:
    names = [DRIVER, "a", "b"]
    orders = [rotated(names, k) for k in range(3)]
    assert [order[0] for order in orders] == names
    assert all(sorted(order) == sorted(names) for order in orders)
    assert rotated(names, 4) == orders[1]


def test_a_ratio_is_the_median_of_the_rounds_ratios_not_the_ratio_of_medians() -> None:
    # Load doubles every figure of round 2: the per-round ratio holds, medians of each side
    # taken apart would not pair them.
    rounds = [
        {GRIDSERVE: {"cpu_mib": 1.5}, DRIVER: {"cpu_mib": 1.0}},
        {GRIDSERVE: {"cpu_mib": 3.0}, DRIVER: {"cpu_mib": 2.0}},
        {GRIDSERVE: {"cpu_mib": 0.8}, DRIVER: {"cpu_mib": 0.4}},
    ]
    found = median_ratio(rounds, pair(GRIDSERVE, DRIVER, "cpu_mib"))
    assert found is not None
    assert found.median == 1.5
    assert found.rounds == (1.5, 1.5, 2.0)
    assert median_figures(rounds)[GRIDSERVE]["cpu_mib"] == 1.5


def test_best_peer_is_the_cheapest_cost_and_the_highest_rate_of_the_same_round() -> None:
    one = {
        GRIDSERVE: {"cpu_req": 1.0, "small_rps": 900.0},
        TORNADO: {"cpu_req": 2.0, "small_rps": 600.0},
        AIOHTTP: {"cpu_req": 0.8, "small_rps": 1200.0},
    }
    assert to_best(GRIDSERVE, PEERS, "cpu_req", lowest=True)(one) == 1.25
    assert to_best(GRIDSERVE, PEERS, "small_rps", lowest=False)(one) == 0.75


def test_a_figure_missing_from_a_round_leaves_that_round_out() -> None:
    rounds = [{GRIDSERVE: {"up_cpu": 4.0}, DRIVER: {"up_cpu": 4.0}}, {GRIDSERVE: {"up_cpu": 5.0}}]
    found = median_ratio(rounds, pair(GRIDSERVE, DRIVER, "up_cpu"))
    assert found is not None and found.rounds == (1.0,)
    assert median_ratio(rounds, pair(GRIDSERVE, DRIVER, "mbs")) is None
    row = next(line for line in table(rounds, [GRIDSERVE], {}) if line.startswith(GRIDSERVE))
    assert row.split()[-1] == "4.50" and row.count("-") >= 5


def test_floors_add_up_within_a_round() -> None:
    one = {
        GRIDSERVE: {"cpu_mib": 0.9, "cpu_req": 1.0},
        DRIVER: {"cpu_mib": 0.4, "cpu_req": 0.4},
        TORNADO_FLOOR: {"cpu_mib": 0.2, "cpu_req": 0.4},
        AIOHTTP: {"cpu_req": 0.5},
    }
    both = (DRIVER, TORNADO_FLOOR)
    assert over_sum(GRIDSERVE, both, "cpu_mib")(one) == pytest.approx(1.5)
    assert sum_over(both, DRIVER, "cpu_mib")(one) == pytest.approx(1.5)
    assert sum_to_best(both, PEERS, "cpu_req")(one) == pytest.approx(1.6)
    assert over_sum(GRIDSERVE, (DRIVER, "absent"), "cpu_mib")(one) is None
