"""The combination matrix's checked-in table covers every pair and is what the generator makes."""

from __future__ import annotations

from covering_array import (
    DISTILL_STRATEGIES,
    FACTORS,
    SPLIT_MODELS,
    SPLIT_TASKS,
    TABLE,
    all_pairs,
    allowed,
    case_name,
    covering_array,
    load_refused,
    load_table,
    pairs_of,
    table_json,
)


def test_the_table_covers_every_pair_of_values():
    covered = set().union(*map(pairs_of, load_table()))
    assert not all_pairs() - covered, sorted(all_pairs() - covered)


def test_the_table_is_what_the_generator_makes():
    # regenerate after changing FACTORS: python tests/integration/covering_array.py --json
    assert load_table() == covering_array()
    assert TABLE.read_text() == table_json(
        covering_array(), load_refused()
    )  # as printed: one row a line


def test_cases_hold_one_known_value_per_factor_and_have_unique_names():
    table = load_table()
    for case in table:
        assert case.keys() == FACTORS.keys() and all(case[f] in FACTORS[f] for f in FACTORS)
    assert len({case_name(case) for case in table}) == len(table)
    # each case is a few seconds of the slow suite; 47 is the least any table can have:
    # tp and pp each need 6 rows (one per optimizer) that must all be gpt, gpt needs 5 more
    # (one per other strategy), and the 5 other models 6 rows each (one per optimizer)
    assert len(table) <= 47


def test_the_generator_covers_small_factor_sets_exactly():
    factors = {"a": [0, 1], "b": [0, 1], "c": [0, 1]}
    rows = covering_array(factors)
    assert set().union(*(pairs_of(row, factors) for row in rows)) == all_pairs(factors)
    assert len(rows) == 4  # the optimum for three binary factors


def test_tp_and_pp_only_split_the_models_and_tasks_they_have_a_plan_for():
    assert not allowed({"strategy": "tp", "model": "rnn"})  # no tensor-parallel plan
    assert not allowed({"strategy": "tp", "task": "classification"})  # a pooled head
    assert allowed({"strategy": "pp", "task": "classification"})  # the last stage pools
    assert not allowed({"strategy": "pp", "task": "regression"})
    assert not allowed({"strategy": "pp", "model": "mlp"})
    assert allowed({"strategy": "tp", "precision": "bf16-true"})
    split = [case for case in load_table() if case["strategy"] in SPLIT_MODELS]
    assert {case["strategy"] for case in split} == {"tp", "pp"}
    for case in split:
        assert case["model"] in SPLIT_MODELS[case["strategy"]]
        assert case["task"] in SPLIT_TASKS[case["strategy"]]
    assert {case["task"] for case in split if case["strategy"] == "pp"} == set(SPLIT_TASKS["pp"])


def test_a_teacher_distills_classifiers_and_language_models_under_single_ddp_and_fsdp():
    assert not allowed({"distill": "live", "task": "regression"})
    assert not allowed({"distill": "precomputed", "strategy": "pp"})
    assert allowed({"distill": "none", "strategy": "diloco"})
    distilled = [case for case in load_table() if case["distill"] != "none"]
    assert {case["strategy"] for case in distilled} == set(DISTILL_STRATEGIES)
    assert {case["model"] for case in distilled} == set(FACTORS["model"])
    assert "bf16-mixed" in {case["precision"] for case in distilled}
