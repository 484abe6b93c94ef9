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

TABLE = Path(__file__).with_name("combinations.json")

FACTORS: dict[str, list] = {
    # not async_ps: its processes are RPC peers (workers + servers) under its own launcher,
    # not ranks of the one torchrun job the distributed cases share, and it refuses
    # bf16-true; test_async_ps.py checks it against one process and a replay, and its
    # refusals are listed under `refused`
    "strategy": ["single", "ddp", "fsdp", "local_sgd", "diloco"],
    "precision": ["32", "bf16-mixed", "bf16-true"],
    "optimizer": ["sgd", "nesterov", "adam", "adamw", "rmsprop", "adagrad"],
    "penalty": ["none", "l1", "elastic"],
    # resnet is not here yet: its ddp twin (rmsprop, l1, accumulation 2, clipping, fp32)
    # ended 0.08-0.12 away from one process, with or without channels_last (see the notes)
    "model": ["mlp", "cnn", "textcnn", "gpt", "rnn"],
    "accumulation": [1, 2],
    "clip": ["none", "norm"],
    "task": ["classification", "regression", "language_model"],
}
# next-token prediction needs a sequence model that predicts every position
SEQUENCE_MODELS = ("gpt", "rnn")

Case = dict[str, object]  # factor -> value
Pair = tuple[str, object, str, object]


def allowed(case: Case) -> bool:
    """A case that can run at all: only gpt and rnn model language. The array covers every
    pair that some allowed case holds; the others are impossible, not untested."""
    if case.get("task") != "language_model" or "model" not in case:  # a pair without a model
        return True
    return case["model"] in SEQUENCE_MODELS


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
    """Greedy over the full product: each row is the first (in product order) of those that
    cover the most still-uncovered pairs. Deterministic; ~30k candidates, a few seconds."""
    candidates = [
        case
        for values in itertools.product(*factors.values())
        if allowed(case := dict(zip(factors, values, strict=True)))
    ]
    covers = [pairs_of(case, factors) for case in candidates]
    uncovered = all_pairs(factors)
    rows = []
    while uncovered:
        best = max(range(len(candidates)), key=lambda index: len(covers[index] & uncovered))
        rows.append(candidates[best])
        uncovered -= covers[best]
    return rows


def case_name(case: Case) -> str:
    """A readable, unique name: ddp-32-adamw-l1-cnn-accum2-clip-regression."""
    clip = "-clip" if case["clip"] == "norm" else ""
    task = "" if case.get("task", "classification") == "classification" else f"-{case['task']}"
    return (
        f"{case['strategy']}-{case['precision']}-{case['optimizer']}-{case['penalty']}-"
        f"{case['model']}-accum{case['accumulation']}{clip}{task}"
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
