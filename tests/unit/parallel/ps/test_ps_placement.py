"""plan_shards: every parameter placed, balanced greedily by size, the same plan every time."""

from __future__ import annotations

import random

import pytest

from scaletrain.errors import ConfigError
from scaletrain.parallel.ps import plan_shards, server_loads


def test_every_parameter_is_placed_and_every_server_gets_one():
    named = [(f"layer{i}.weight", 10 * (i + 1)) for i in range(7)]
    plan = plan_shards(named, 3)
    assert list(plan) == [name for name, _ in named]  # model order
    assert set(plan.values()) == {0, 1, 2}


def test_greedy_balance_on_a_known_case():
    # largest first onto the least loaded: 8->0, 7->1, 6->2, 5->2 (6 < 7 < 8), 4->1, 1->0
    named = [("a", 1), ("b", 4), ("c", 5), ("d", 6), ("e", 7), ("f", 8)]
    plan = plan_shards(named, 3)
    assert plan == {"a": 0, "b": 1, "c": 2, "d": 2, "e": 1, "f": 0}
    assert server_loads(plan, named) == [9, 11, 11]


def test_balance_is_within_the_largest_parameter():
    rng = random.Random(0)
    named = [(f"p{i}", rng.randrange(1, 10_000)) for i in range(200)]
    loads = server_loads(plan_shards(named, 5), named)
    assert max(loads) - min(loads) <= max(numel for _, numel in named)
    assert sum(loads) == sum(numel for _, numel in named)


def test_the_plan_is_deterministic_and_ties_keep_model_order():
    named = [(f"p{i}", 100) for i in range(6)] + [("empty", 0)]
    first = plan_shards(named, 4)
    assert first == plan_shards(list(named), 4)
    assert [first[f"p{i}"] for i in range(6)] == [0, 1, 2, 3, 0, 1]
    assert first["empty"] == 2  # least load, then fewest parameters


def test_zero_sized_parameters_still_spread_over_servers():
    named = [("a", 0), ("b", 0), ("c", 0)]
    assert sorted(plan_shards(named, 3).values()) == [0, 1, 2]


def test_more_servers_than_parameters_is_one_config_error():
    with pytest.raises(ConfigError, match=r"parallel\.ps\.servers: 4 servers.*only 3"):
        plan_shards([("a", 1), ("b", 2), ("c", 3)], 4)


def test_one_server_holds_everything():
    named = [("a", 3), ("b", 1)]
    assert plan_shards(named, 1) == {"a": 0, "b": 0}
