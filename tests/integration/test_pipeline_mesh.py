"""Pipeline stages on the device mesh (`parallel.strategy=fsdp`, `parallel.dims.pp=2`) on 4
gloo processes train a tiny GPT as one process does.

Layouts: pp 2 x dp_shard 2 (1f1b, and interleaved_1f1b with 2 stages per rank) and
pp 2 x tp 2 (gpipe). Each logs the single-process loss curve step for step (fp32: loss rel
1e-5, grad norm rel 1e-4; the sums only change order: FSDP averages over the data-parallel
ranks, TP sums partial products and the loss-parallel log-sum-exp) and ends with the same
weights (rtol 1e-4, atol 1e-4 after 10 AdamW steps; measured when written: at most 1.0e-5
apart under pp x dp_shard, 5.2e-5 under pp x tp; Adam divides by the root of the second
moment, so rounding in tiny gradients shows more). Clipping at 0.5 acts on every step, so
the global norm must cross the stages and the shards. The dp layout accumulates 2 micro
batches per step, and the epoch ends on a short step of an odd sample count, whose
data-parallel shares differ by one (run as one piece on each rank); resumed at pp x tp with
2-sample micro batches, the short step is 2 + 2 + 1 samples (run as one micro batch: a new
piece shape's first schedule step drops the FSDP gradients accumulated before it). A checkpoint written
at pp 2 x dp_shard 2 resumes in one process and at pp 2 x tp 2, continuing as the
uninterrupted run does. Under bf16-mixed, pp 2 x dp_shard 2 follows the fp32 curve within
2 %.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from distributed_helpers import WORKERS, load_weights, torchrun

from scaletrain import api

pytestmark = pytest.mark.slow

MAX_STEPS, SAVED_AT, BATCH = 10, 5, 8
TOLERANCE = {"rel": 1e-5, "abs": 1e-6}
MESH = "parallel.strategy=fsdp,parallel.dims.pp=2"
LAYOUTS = {
    "pp2_dp2_1f1b": f"{MESH},parallel.dims.dp_shard=2,train.micro_batch_size=2,"
    "parallel.pp.microbatches=2",
    "pp2_dp2_interleaved": f"{MESH},parallel.dims.dp_shard=2,parallel.pp.microbatches=2,"
    "parallel.pp.schedule=interleaved_1f1b,parallel.pp.stages_per_rank=2",
    "pp2_tp2_gpipe": f"{MESH},parallel.dims.tp=2,parallel.pp.schedule=gpipe",
}
# bf16-mixed: FSDP gathers parameters in bf16 inside each stage; compared loosely
BF16 = f"{MESH},parallel.dims.dp_shard=2,parallel.pp.microbatches=2,train.precision=bf16-mixed"


def _config(corpus: Path) -> dict:
    return {
        "run": {"seed": 11},
        "data": {
            "source": "text_corpus",
            "path": str(corpus),
            "task": "language_model",
            "context_length": 16,
            "text": {"vectorizer": "byte"},
        },
        "model": {"name": "gpt", "n_layer": 4, "n_head": 2, "d_model": 32, "tie_weights": False},
        "optim": {"name": "adamw", "lr": 0.01, "clip": {"mode": "norm", "max": 0.5}},
        "train": {"max_steps": MAX_STEPS, "batch_size": BATCH, "precision": "32", "device": "cpu"},
        "checkpoint": {
            "every_steps": SAVED_AT,
            "every_epochs": 0,
            "save_best": False,
            "keep_last": 5,
        },
        "log": {"every_steps": 1, "progress": False, "tensorboard": False, "report": False},
    }


def _write_corpus(folder: Path) -> None:
    """Small files of Python-like words: an epoch of a few steps, the last one short."""
    folder.mkdir()
    rng = random.Random(1)
    words = ["for", "in", "range", "(", ")", ":", "print", "x", "y", "+", "2"]
    for index in range(9):
        lines = [" ".join(rng.choice(words) for _ in range(9)) for _ in range(7)]
        (folder / f"part{index}.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ppmesh")
    _write_corpus(out / "corpus")
    config = _config(out / "corpus")
    specs = [f"{name}={overrides}" for name, overrides in LAYOUTS.items()]
    specs.append(f"pp2_dp2_bf16={BF16}")
    job = [str(WORKERS / "train_variants.py"), str(out), json.dumps(config), *specs]
    finished = torchrun(job, nproc=4, timeout=400)
    assert finished.returncode == 0, finished.output
    api.train({**config, "run": {"seed": 11, "name": "single", "out_dir": str(out)}})
    return {"out": out, "config": config}


def _records(run_dir: Path, split: str) -> dict[int, dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines) if r.get("split") == split}


def _assert_same_curve(got: Path, expected: Path) -> None:
    mine, theirs = _records(got, "train"), _records(expected, "train")
    assert sorted(mine) == list(range(1, MAX_STEPS + 1))
    for step in mine:
        assert mine[step]["loss"] == pytest.approx(theirs[step]["loss"], **TOLERANCE), step
        assert mine[step]["grad_norm"] == pytest.approx(theirs[step]["grad_norm"], rel=1e-4)
    val_mine, val_theirs = _records(got, "val"), _records(expected, "val")
    assert val_mine.keys() == val_theirs.keys() and val_mine
    for step, record in val_mine.items():
        assert record["loss"] == pytest.approx(val_theirs[step]["loss"], **TOLERANCE)
        for name, value in val_theirs[step]["metrics"].items():
            assert record["metrics"][name] == pytest.approx(value, **TOLERANCE), name


def test_the_epoch_ends_on_a_short_step_that_data_parallel_ranks_share_unevenly(runs):
    plan = json.loads((runs["out"] / "single" / "plan.json").read_text())
    short = plan["num_train_samples"] % BATCH
    assert short % 2 == 1 and plan["steps_per_epoch"] < MAX_STEPS, plan


@pytest.mark.parametrize("name", LAYOUTS)
def test_each_layout_matches_one_process(runs, name):
    out = runs["out"]
    _assert_same_curve(out / name, out / "single")
    norms = [record["grad_norm"] for record in _records(out / "single", "train").values()]
    assert min(norms) > 0.5  # clipping acted on every step
    reference, candidate = load_weights(out / "single"), load_weights(out / name)
    assert reference.keys() == candidate.keys()
    for key in reference:
        torch.testing.assert_close(candidate[key], reference[key], rtol=1e-4, atol=1e-4, msg=key)
    summary = json.loads((out / name / "summary.json").read_text())
    assert summary["world_size"] == 4 and summary["status"] == "finished"


@pytest.mark.parametrize("name", LAYOUTS)
def test_rank_0_writes_the_last_stages_predictions_of_every_data_parallel_rank(runs, name):
    expected_dir, got_dir = (
        runs["out"] / "single" / "predictions",
        runs["out"] / name / "predictions",
    )
    assert sorted(p.name for p in got_dir.iterdir()) == ["test.npz", "val.npz"]
    for split in ("val", "test"):
        with (
            np.load(expected_dir / f"{split}.npz") as expected,
            np.load(got_dir / f"{split}.npz") as got,
        ):
            np.testing.assert_array_equal(got["target"], expected["target"])
            assert (got["pred"] == expected["pred"]).mean() > 0.99  # near-ties may flip


def test_bf16_mixed_trains_like_fp32(runs):
    got = _records(runs["out"] / "pp2_dp2_bf16", "train")
    expected = _records(runs["out"] / "single", "train")
    assert sorted(got) == list(range(1, MAX_STEPS + 1))
    for step, record in got.items():  # measured when written: within 0.2 %
        assert record["loss"] == pytest.approx(expected[step]["loss"], rel=2e-2), step
    assert got[MAX_STEPS]["loss"] < 0.7 * got[1]["loss"]


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


def test_pp_dp_checkpoint_resumes_in_one_process(runs, tmp_path):
    single = {"strategy": "single", "dims": {}, "pp": {}}
    resumed = _cut_back(runs["out"] / "pp2_dp2_1f1b", tmp_path / "single", parallel=single)
    api.resume(resumed)
    _assert_same_curve(resumed, runs["out"] / "single")
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["counters"]["restarts"] == 1 and summary["world_size"] == 1


def test_pp_dp_checkpoint_resumes_at_pp_tp(runs, tmp_path):
    layout = {
        "dims": {"pp": 2, "tp": 2, "dp_shard": 1},
        "pp": {"schedule": "gpipe", "microbatches": 2},
    }
    resumed = _cut_back(runs["out"] / "pp2_dp2_1f1b", tmp_path / "pp_tp", parallel=layout)
    finished = torchrun(["-m", "scaletrain", "resume", str(resumed)], nproc=4, timeout=300)
    assert finished.returncode == 0, finished.output
    _assert_same_curve(resumed, runs["out"] / "single")
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["counters"]["restarts"] == 1 and summary["world_size"] == 4
