"""Pipeline parallelism on 2 gloo processes trains a tiny GPT as one process does.

Each schedule (gpipe, 1f1b, interleaved_1f1b with 2 stages per rank) gives the loss curve of
the single-process run step for step (fp32: loss rel 1e-5, abs 1e-6; grad norm rel 1e-4:
the sums only change order; Adam would hide a gradient scaled by a constant, the norm does
not), and the same final weights (abs 5e-5 after 12 Adam steps). Accumulation with clipping too (the global grad norm
crosses stages). An epoch ends on a short batch, which the pipeline cuts into fewer pieces.
A checkpoint written by 2 stages resumes in one process, and one of a single process resumes
as 2 stages, each continuing as the uninterrupted run does.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from distributed_helpers import load_weights, torchrun, train_variants

from scaletrain import api

pytestmark = pytest.mark.slow

MAX_STEPS, SAVED_AT, BATCH = 12, 5, 8
TOLERANCE = {"rel": 1e-5, "abs": 1e-6}
VARIANTS = {
    "pp_gpipe": "parallel.strategy=pp,parallel.pp.schedule=gpipe",
    "pp_1f1b": "parallel.strategy=pp,parallel.pp.schedule=1f1b",
    "pp_interleaved": (
        "parallel.strategy=pp,parallel.pp.schedule=interleaved_1f1b,parallel.pp.stages_per_rank=2"
    ),
}
ACCUMULATE_CLIP = "train.micro_batch_size=4,optim.clip.mode=norm,optim.clip.max=0.3"


def _config(corpus: Path) -> dict:
    return {
        "run": {"seed": 7},
        "data": {
            "source": "text_corpus",
            "path": str(corpus),
            "task": "language_model",
            "context_length": 16,
            "text": {"vectorizer": "byte"},
        },
        "model": {
            "name": "gpt",
            "n_layer": 4,
            "n_head": 2,
            "d_model": 32,
            "tie_weights": False,
        },
        "optim": {"name": "adamw", "lr": 0.01, "schedule": {"name": "cosine"}},
        "train": {
            "max_steps": MAX_STEPS,
            "batch_size": BATCH,
            "precision": "32",
            "device": "cpu",
        },
        "checkpoint": {
            "every_steps": SAVED_AT,
            "every_epochs": 0,
            "save_best": False,
            "keep_last": 5,
        },
        "log": {"every_steps": 1, "progress": False, "tensorboard": False, "report": False},
    }


def _write_corpus(folder: Path) -> None:
    """Twelve small files of Python-like words: a few dozen 17-token windows in all."""
    folder.mkdir()
    rng = random.Random(0)
    words = ["def", "x", "return", "(", ")", ":", "import", "os", "self", "=", "1"]
    for index in range(12):
        lines = [" ".join(rng.choice(words) for _ in range(8)) for _ in range(7)]
        (folder / f"part{index}.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("pp")
    _write_corpus(out / "corpus")
    config = _config(out / "corpus")
    specs = [f"{name}={overrides}" for name, overrides in VARIANTS.items()]
    specs.append(
        f"pp_accumulate_clip=parallel.strategy=pp,parallel.pp.microbatches=2,{ACCUMULATE_CLIP}"
    )
    train_variants(out, config, specs, timeout=400)
    for name, overrides in {
        "single": [],
        "single_accumulate_clip": ACCUMULATE_CLIP.split(","),
    }.items():
        api.train(
            {**config, "run": {"seed": 7, "name": name, "out_dir": str(out)}}, overrides=overrides
        )
    return {"out": out, "config": config}


def _records(run_dir: Path, split: str) -> dict[int, dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines) if r.get("split") == split}


def _assert_same_curve(got: Path, expected: Path, steps=range(1, MAX_STEPS + 1)) -> None:
    mine, theirs = _records(got, "train"), _records(expected, "train")
    assert sorted(mine) == list(range(1, MAX_STEPS + 1))
    for step in steps:
        assert mine[step]["loss"] == pytest.approx(theirs[step]["loss"], **TOLERANCE), step
        assert mine[step]["grad_norm"] == pytest.approx(theirs[step]["grad_norm"], rel=1e-4)
    val_mine, val_theirs = _records(got, "val"), _records(expected, "val")
    assert val_mine.keys() == val_theirs.keys() and val_mine
    for step, record in val_mine.items():
        assert record["loss"] == pytest.approx(val_theirs[step]["loss"], **TOLERANCE)
        for name, value in val_theirs[step]["metrics"].items():
            assert record["metrics"][name] == pytest.approx(value, **TOLERANCE), name


def test_an_epoch_ends_on_a_short_batch(runs):
    plan = json.loads((runs["out"] / "single" / "plan.json").read_text())
    assert plan["num_train_samples"] % BATCH and plan["steps_per_epoch"] < MAX_STEPS


@pytest.mark.parametrize("name", VARIANTS)
def test_each_schedule_matches_one_process(runs, name):
    out = runs["out"]
    _assert_same_curve(out / name, out / "single")
    reference, candidate = load_weights(out / "single"), load_weights(out / name)
    assert reference.keys() == candidate.keys()
    for key in reference:  # Adam divides by sqrt(v): tiny gradients' rounding shows more
        torch.testing.assert_close(candidate[key], reference[key], rtol=1e-4, atol=5e-5, msg=key)
    summary = json.loads((out / name / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "finished"


def test_accumulation_and_clipping_match_one_process(runs):
    out = runs["out"]
    _assert_same_curve(out / "pp_accumulate_clip", out / "single_accumulate_clip")
    norms = [r["grad_norm"] for r in _records(out / "single_accumulate_clip", "train").values()]
    assert max(norms) > 0.3  # clipping acted: the global norm had to cross the stages


def _cut_back(run_dir: Path, to: Path, *, parallel: dict) -> Path:
    """The run as a crash after step SAVED_AT's checkpoint leaves it, under a new layout."""
    shutil.copytree(run_dir, to)
    for late in (to / "checkpoints").glob("step_*"):
        if int(late.name.removeprefix("step_")) > SAVED_AT:
            shutil.rmtree(late)
    config = yaml.safe_load((to / "config.yaml").read_text())
    config["parallel"].update(parallel)
    (to / "config.yaml").write_text(yaml.safe_dump(config))
    return to


def test_two_stage_checkpoint_resumes_in_one_process(runs, tmp_path):
    single = {"strategy": "single", "pp": {}}
    resumed = _cut_back(runs["out"] / "pp_1f1b", tmp_path / "to_single", parallel=single)
    api.resume(resumed)
    _assert_same_curve(resumed, runs["out"] / "single")
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["counters"]["restarts"] == 1 and summary["world_size"] == 1


def test_one_process_checkpoint_resumes_as_two_stages(runs, tmp_path):
    pipeline = {"strategy": "pp", "pp": {"schedule": "gpipe"}}
    resumed = _cut_back(runs["out"] / "single", tmp_path / "to_pp", parallel=pipeline)
    finished = torchrun(["-m", "scaletrain", "resume", str(resumed)], nproc=2, timeout=240)
    assert finished.returncode == 0, finished.output
    _assert_same_curve(resumed, runs["out"] / "single")
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["counters"]["restarts"] == 1 and summary["world_size"] == 2
