"""Issue 5, test 3: a checkpoint saved by 2 FSDP ranks resumes on 1 and on 3 ranks, and a
DDP checkpoint resumes under FSDP. The steps after the resume see exactly the global sample
order of the uninterrupted 2-rank run, and their losses equal its losses within fp32
tolerance (DCP reshards model and optimizer state; the gradient sums change order)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from distributed_helpers import torchrun, train_variants

from scaletrain.train.ledger import LEDGER, expand_ledger, read_ledger

pytestmark = pytest.mark.slow

MAX_STEPS, SAVED_AT = 8, 4
CONFIG = {
    "run": {"seed": 5},
    "data": {"source": "builtin", "name": "digits", "layout": "flat"},
    "model": {"name": "mlp", "hidden": [32]},
    "optim": {"name": "adamw", "lr": 0.01, "schedule": {"name": "cosine"}},
    # 48 divides by 1, 2 and 3 ranks: the global batch stays the same at every world size
    "train": {"max_steps": MAX_STEPS, "batch_size": 48, "precision": "32", "device": "cpu"},
    "checkpoint": {"every_steps": SAVED_AT, "every_epochs": 0, "save_best": False},
    "log": {"every_steps": 1, "progress": False, "tensorboard": False, "report": False},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """The uninterrupted 2-rank runs, FSDP and DDP, with a checkpoint at step SAVED_AT."""
    out = tmp_path_factory.mktemp("two_ranks")
    specs = ["fsdp=parallel.strategy=fsdp", "ddp=parallel.strategy=ddp"]
    train_variants(out, CONFIG, specs, timeout=240)
    return out


def _cut_back(run_dir: Path, to: Path, *, strategy: str | None = None) -> Path:
    """A copy of the run as a crash after step SAVED_AT's checkpoint would leave it."""
    shutil.copytree(run_dir, to)
    for late in (to / "checkpoints").glob("step_*"):
        if int(late.name.removeprefix("step_")) > SAVED_AT:
            shutil.rmtree(late)
    if strategy is not None:  # resume under another strategy: the run's own config says which
        config = yaml.safe_load((to / "config.yaml").read_text())
        config["parallel"]["strategy"] = strategy
        (to / "config.yaml").write_text(yaml.safe_dump(config))
    return to


def _train_losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r.get("split") == "train"}


def _resume_and_compare(reference: Path, resumed: Path, nproc: int) -> None:
    finished = torchrun(["-m", "scaletrain", "resume", str(resumed)], nproc=nproc, timeout=180)
    assert finished.returncode == 0, finished.output
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["world_size"] == nproc and summary["steps"] == MAX_STEPS
    assert summary["counters"]["restarts"] == 1
    expected, got = _train_losses(reference), _train_losses(resumed)
    assert sorted(got) == list(range(1, MAX_STEPS + 1))
    for step in range(1, SAVED_AT + 1):  # logged before the checkpoint: kept as they were
        assert got[step] == expected[step], step
    for step in range(SAVED_AT + 1, MAX_STEPS + 1):  # the next step on: fp32 tolerance
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), (step, got)
    # same global samples, step by step, at the new world size
    ledger = expand_ledger(read_ledger(resumed / LEDGER))
    assert ledger == expand_ledger(read_ledger(reference / LEDGER))
    assert [row[0] for row in ledger] == list(range(1, MAX_STEPS + 1))


@pytest.mark.parametrize("nproc", [1, 3])
def test_fsdp_checkpoint_of_two_ranks_resumes_on_another_world_size(runs, tmp_path, nproc):
    resumed = _cut_back(runs / "fsdp", tmp_path / f"fsdp_on_{nproc}")
    _resume_and_compare(runs / "fsdp", resumed, nproc)


def test_ddp_checkpoint_resumes_under_fsdp(runs, tmp_path):
    resumed = _cut_back(runs / "ddp", tmp_path / "ddp_as_fsdp", strategy="fsdp")
    _resume_and_compare(runs / "ddp", resumed, 2)
    config = yaml.safe_load((resumed / "config.yaml").read_text())
    assert config["parallel"]["strategy"] == "fsdp"
