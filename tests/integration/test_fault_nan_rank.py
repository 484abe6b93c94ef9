"""Issue 5, test 5 on 2 processes: a NaN on rank 1 only (a poisoned sample that only rank 1
reads) is seen by every rank through the step-boundary all-reduce. `skip`: both ranks skip
that step together and the weights equal a clean run without it; `rollback`: the run
reloads the last checkpoint, lowers the learning rate, logs the event and completes."""

from __future__ import annotations

import json

import pytest
import torch
from distributed_helpers import WORKERS, torchrun
from test_fault_guards import _reference
from workers.nan_on_rank import poisoned_data

from scaletrain.checkpoint.export import read_full_tensors

pytestmark = pytest.mark.slow

POISON_STEP, STEPS = 5, 8
GUARDS = {
    "skip": {"nonfinite": "skip"},
    "rollback": {"nonfinite": "rollback", "max_consecutive_bad": 1, "lr_backoff": 0.5},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("nan_on_rank_1")
    specs = [f"{name}={json.dumps(guard)}" for name, guard in GUARDS.items()]
    worker = str(WORKERS / "nan_on_rank.py")
    finished = torchrun([worker, str(out), str(POISON_STEP), *specs], timeout=240)
    assert finished.returncode == 0, finished.output
    return out


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_skip_on_every_rank_equals_a_clean_run_without_that_step(runs):
    run_dir = runs / "skip"
    last = run_dir / "checkpoints" / f"step_{STEPS:08d}"
    weights = read_full_tensors(last, prefix="model.")
    reference = _reference(*poisoned_data(POISON_STEP), steps=STEPS, skip_steps={POISON_STEP})
    for name, expected in reference.state_dict().items():
        # DDP sums gradients in another order than one process: fp32 tolerance
        torch.testing.assert_close(weights[f"net.{name}"], expected, rtol=1e-5, atol=1e-6)
    skips = [r for r in _records(run_dir) if r.get("event") == "skip"]
    assert [r["step"] for r in skips] == [POISON_STEP] and "non-finite" in skips[0]["detail"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["counters"]["skipped_steps"] == 1


def test_rollback_on_every_rank_lowers_the_lr_and_completes(runs):
    run_dir = runs / "rollback"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["world_size"] == 2
    assert summary["counters"]["rollbacks"] == 1 and summary["counters"]["skipped_batches"] == 1
    records = _records(run_dir)
    rollbacks = [r for r in records if r.get("event") == "rollback"]
    assert len(rollbacks) == 1 and f"step_{POISON_STEP - 1:08d}" in rollbacks[0]["detail"]
    after = [r["lr"] for r in records[records.index(rollbacks[0]) :] if r.get("split") == "train"]
    assert after and set(after) == {0.005}
    # the last checkpoint, written by rank 1 too: lr scale and the batch never trained on
    final = run_dir / "checkpoints" / f"step_{STEPS:08d}" / "rank_00001.json"
    side = json.loads(final.read_text())
    assert side["lr_scale"] == 0.5 and side["skip_spans"] == [[0, 128, 160]]
