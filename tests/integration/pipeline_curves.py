"""Shared by the pipeline tests: small word corpora, metrics records, curve comparison."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import yaml

TOLERANCE = {"rel": 1e-5, "abs": 1e-6}  # fp32 pipeline stages against one process


def write_word_corpus(folder: Path, words: list[str], *, seed: int, files: int, width: int):
    """`files` small files of 7 lines, each `width` words drawn from `words` (seeded)."""
    folder.mkdir()
    rng = random.Random(seed)
    for index in range(files):
        lines = [" ".join(rng.choice(words) for _ in range(width)) for _ in range(7)]
        (folder / f"part{index}.txt").write_text("\n".join(lines) + "\n")


def records(run_dir: Path, split: str) -> dict[int, dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines) if r.get("split") == split}


def assert_same_curve(got: Path, expected: Path, *, max_steps: int) -> None:
    """Every train step's loss and grad norm, and every validation record, as `expected`."""
    mine, theirs = records(got, "train"), records(expected, "train")
    assert sorted(mine) == list(range(1, max_steps + 1))
    for step in mine:
        assert mine[step]["loss"] == pytest.approx(theirs[step]["loss"], **TOLERANCE), step
        assert mine[step]["grad_norm"] == pytest.approx(theirs[step]["grad_norm"], rel=1e-4)
    val_mine, val_theirs = records(got, "val"), records(expected, "val")
    assert val_mine.keys() == val_theirs.keys() and val_mine
    for step, record in val_mine.items():
        assert record["loss"] == pytest.approx(val_theirs[step]["loss"], **TOLERANCE)
        for name, value in val_theirs[step]["metrics"].items():
            # a classifier's per-class metrics and confusion matrix: nested, compared flat
            got_value = _flat(record["metrics"][name])
            assert got_value == pytest.approx(_flat(value), **TOLERANCE), name


def _flat(value) -> list:
    """Numbers of a metric in order, however nested (dicts of lists, matrices)."""
    if isinstance(value, dict):
        return [number for key in sorted(value) for number in _flat(value[key])]
    if isinstance(value, list):
        return [number for item in value for number in _flat(item)]
    return [value]


def cut_back(run_dir: Path, to: Path, *, saved_at: int, parallel: dict) -> Path:
    """The run as a crash after step `saved_at`'s checkpoint leaves it, under a new layout."""
    shutil.copytree(run_dir, to)
    for late in (to / "checkpoints").glob("step_*"):
        if int(late.name.removeprefix("step_")) > saved_at:
            shutil.rmtree(late)
    config = yaml.safe_load((to / "config.yaml").read_text())
    config["parallel"].update(parallel)
    (to / "config.yaml").write_text(yaml.safe_dump(config))
    return to


def assert_resumed_as(resumed: Path, expected: Path, *, max_steps: int, world_size: int):
    """A resumed run: one restart, at `world_size`, continuing as `expected`."""
    assert_same_curve(resumed, expected, max_steps=max_steps)
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["counters"]["restarts"] == 1 and summary["world_size"] == world_size
