"""The combination matrix's factors and a deterministic greedy pairwise covering array.

`python tests/integration/covering_array.py` prints the table; `--json` prints what
`combinations.json` holds (the checked-in table that `test_combinations.py` runs and
`test_covering_array.py` checks against this generator). A new feature adds its factor or
value here, regenerates the table and checks it in.

`combinations.json` also lists, by hand under `refused`, combinations that cannot work: a
case plus the settings that break it (`set`, dotted keys) and the one-line message that
refuses it before any run directory is written; `--json` keeps them as they are.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

from scaletrain.parallel.tensor_parallel import TP_PLANS

TABLE = Path(__file__).with_name("combinations.json")

FACTORS: dict[str, list] = {
    # not async_ps: its processes are RPC peers (workers + servers) under its own launcher,
    # not ranks of the one torchrun job the distributed cases share, and it refuses
    # bf16-true; test_async_ps.py checks it against one process and a replay, and its
    # refusals are listed under `refused`
    # tp: fsdp with parallel.dims.tp=2 (both ranks one tensor-parallel group); pp: 2 stages,
    # parallel.strategy=pp for language models, fsdp with parallel.dims.pp=2 for classifiers
    "strategy": ["single", "ddp", "fsdp", "local_sgd", "diloco", "tp", "pp"],
    "precision": ["32", "bf16-mixed", "bf16-true"],
    "optimizer": ["sgd", "nesterov", "adam", "adamw", "rmsprop", "adagrad"],
    "penalty": ["none", "l1", "elastic"],
    "model": ["mlp", "cnn", "resnet", "textcnn", "gpt", "rnn"],
    "accumulation": [1, 2],
    "clip": ["none", "norm"],
    "task": ["classification", "regression", "language_model"],
    # a teacher run (one tiny one per data family, trained first): none, its logits live
    # each step, or precomputed once into the run directory (distill.precompute)
    "distill": ["none", "live", "precomputed"],
}
# next-token prediction needs a sequence model that predicts every position
SEQUENCE_MODELS = ("gpt", "rnn")
# tp splits the models with a tensor-parallel plan, pp cuts the GPT layout into stages
# (parallel/pipeline_split.py); tp only for next-token prediction, pp also for a GPT
# sequence classifier (its last stage pools with the token ids every stage receives)
SPLIT_MODELS = {"tp": tuple(sorted(TP_PLANS)), "pp": ("gpt",)}
SPLIT_TASKS = {"tp": ("language_model",), "pp": ("language_model", "classification")}
# a teacher needs the student's whole outputs on each rank and class probabilities
# (config/distill.py refuses the rest: listed under `refused`)
DISTILL_STRATEGIES = ("single", "ddp", "fsdp")

Case = dict[str, object]  # factor -> value
Pair = tuple[str, object, str, object]
# rows tried from the rarest uncovered pairs; the best is kept. 10 gave 48 rows once the
# distill factor came; 30 reaches the lower bound, 47, in 0.1 s
SEEDS_PER_ROW = 30


def allowed(case: Case) -> bool:
    """A case that can run at all: only gpt and rnn model language, tp and pp split only the
    models they have a plan for, tp for language only, and a teacher distills classifiers and
    language models under single, ddp and fsdp. The array covers every pair that some allowed
    case holds; the others are impossible, not untested. `case` may be a pair."""
    model, task, strategy = case.get("model"), case.get("task"), case.get("strategy")
    if task == "language_model" and model is not None and model not in SEQUENCE_MODELS:
        return False
    if case.get("distill", "none") != "none" and (
        task == "regression" or strategy not in (None, *DISTILL_STRATEGIES)
    ):
        return False
    if strategy not in SPLIT_MODELS:
        return True
    return task in (None, *SPLIT_TASKS[strategy]) and model in (None, *SPLIT_MODELS[strategy])


def pairs_of(case: Case, factors: dict[str, list] = FACTORS) -> set[Pair]:
    """Every pair of (factor, value) the case holds, factors in their `factors` order."""
    names = [name for name in factors if name in case]
    return {(a, case[a], b, case[b]) for a, b in itertools.combinations(names, 2)}


def all_pairs(factors: dict[str, list] = FACTORS) -> set[Pair]:
    """The pairs a covering array must hold: each value of each factor with each of any other,
    where some allowed case holds both."""
    return {
        (a, x, b, y)
        for a, b in itertools.combinations(factors, 2)
        for x in factors[a]
        for y in factors[b]
        if allowed({a: x, b: y})
    }


def covering_array(factors: dict[str, list] = FACTORS) -> list[Case]:
    """Greedy, one row at a time (AETG-style): a row starts from the rarest uncovered pair
    and takes, factor by factor, the allowed value that covers the most uncovered pairs with
    the values chosen so far. Deterministic and fast (no walk over the full product); rare
    pairs first (tp and pp only run gpt) let them share rows, which reached
    the lower bound for today's factors (47: 6 optimizers x tp, x pp and gpt under the 5
    other strategies, 6 optimizers x the 5 other models)."""
    uncovered = all_pairs(factors)
    order = sorted(
        uncovered, key=lambda pair: (_completions(pair, factors), *_position(pair, factors))
    )
    rows = []
    while uncovered:
        seeds = [pair for pair in order if pair in uncovered][:SEEDS_PER_ROW]
        rows.append(
            max(
                (_row_from(seed, uncovered, factors) for seed in seeds),
                key=lambda row: len(pairs_of(row, factors) & uncovered),
            )
        )
        uncovered -= pairs_of(rows[-1], factors)
    return rows


def _completions(pair: Pair, factors: dict[str, list]) -> int:
    """How many single values of the other factors keep the pair allowed: fewer is rarer."""
    a, x, b, y = pair
    others = [name for name in factors if name not in (a, b)]
    return sum(allowed({a: x, b: y, name: v}) for name in others for v in factors[name])


def _position(pair: Pair, factors: dict[str, list] = FACTORS) -> tuple[int, ...]:
    """The pair's place in factor and value order: ties among equally rare pairs."""
    a, x, b, y = pair
    names = list(factors)
    return names.index(a), factors[a].index(x), names.index(b), factors[b].index(y)


def _row_from(seed: Pair, uncovered: set[Pair], factors: dict[str, list]) -> Case:
    a, x, b, y = seed
    row: Case = {a: x, b: y}
    for name in factors:
        if name not in row:
            choices = [value for value in factors[name] if allowed({**row, name: value})]
            # max keeps the first of equals: the factor's value order breaks ties
            row[name] = max(
                choices, key=lambda v: len(pairs_of({**row, name: v}, factors) & uncovered)
            )
    return {name: row[name] for name in factors}


def case_name(case: Case) -> str:
    """A readable, unique name: ddp-32-adamw-l1-cnn-accum2-clip-regression."""
    clip = "-clip" if case["clip"] == "norm" else ""
    task = "" if case.get("task", "classification") == "classification" else f"-{case['task']}"
    distill = "" if case.get("distill", "none") == "none" else f"-distill_{case['distill']}"
    return (
        f"{case['strategy']}-{case['precision']}-{case['optimizer']}-{case['penalty']}-"
        f"{case['model']}-accum{case['accumulation']}{clip}{task}{distill}"
    )


def load_table() -> list[Case]:
    return json.loads(TABLE.read_text())["cases"]


def load_refused() -> list[dict]:
    return json.loads(TABLE.read_text())["refused"]


def table_json(rows: list[Case], refused: list[dict]) -> str:
    """The checked-in file's text: one entry per line, so a diff shows rows."""

    def block(entries: list) -> str:
        return ",\n".join(f"    {json.dumps(entry)}" for entry in entries)

    return f'{{\n  "cases": [\n{block(rows)}\n  ],\n  "refused": [\n{block(refused)}\n  ]\n}}\n'


def main() -> None:
    rows = covering_array()
    if "--json" in sys.argv:
        print(table_json(rows, load_refused()), end="")
        return
    widths = {name: max(len(name), *(len(str(v)) for v in FACTORS[name])) for name in FACTORS}
    print("  ".join(name.ljust(widths[name]) for name in FACTORS))
    for row in rows:
        print("  ".join(str(row[name]).ljust(widths[name]) for name in FACTORS))
    print(f"{len(rows)} cases cover all {len(all_pairs())} pairs")


if __name__ == "__main__":
    main()
