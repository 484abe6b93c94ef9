"""Issue 5, test 2: 2 gloo processes (DDP, FSDP); one worker is SIGKILLed mid-run and
torchrun's agent (`--max-restarts 1`) restarts the group, which resumes from the newest
checkpoint. The run completes with the losses of an uninterrupted run, train and val/test
alike (the model has BatchNorm, whose running statistics only evaluation reads), and the
sample ledger shows that only the steps since the last checkpoint were trained again."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from distributed_helpers import WORKERS, child_env, free_port, run, train_variants

from scaletrain.train.ledger import LEDGER, expand_ledger, read_ledger

pytestmark = pytest.mark.slow

MAX_STEPS, EVERY, KILL_AT = 12, 4, 7  # killed 3 steps after the step-4 checkpoint
CONFIG = {
    "run": {"seed": 11},
    "data": {"source": "builtin", "name": "digits", "layout": "flat"},
    # BatchNorm: each rank's forwards update its running statistics from its own samples;
    # only evaluation reads them, so val/test catch a restart that restores other ones
    "model": {"name": "mlp", "hidden": [32], "batch_norm": True},
    "optim": {"name": "adamw", "lr": 0.01, "schedule": {"name": "cosine"}},
    "train": {"max_steps": MAX_STEPS, "batch_size": 32, "precision": "32", "device": "cpu"},
    "checkpoint": {"every_steps": EVERY, "every_epochs": 0, "save_best": False},
    "log": {"every_steps": 1, "progress": False, "tensorboard": False, "report": False},
    "parallel": {"timeout_s": 30},  # a broken restart fails in seconds, not in 10 minutes
}
STRATEGIES = ["ddp", "fsdp"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    specs = [f"{name}=parallel.strategy={name}" for name in STRATEGIES]
    train_variants(out, CONFIG, specs, timeout=240)
    return out


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _train_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in _records(run_dir) if r.get("split") == "train"}


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _validations(run_dir: Path) -> list[dict]:
    records = [r for r in _records(run_dir) if r.get("split") == "val"]
    return [{key: value for key, value in r.items() if key != "time_s"} for r in records]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_killed_worker_is_restarted_and_the_run_completes(uninterrupted, tmp_path, strategy):
    config = {**CONFIG, "run": {"seed": 11, "name": "killed", "out_dir": str(tmp_path)}}
    config["parallel"] = {**CONFIG["parallel"], "strategy": strategy}
    config_file = tmp_path / "killed.yaml"
    config_file.write_text(yaml.safe_dump(config))
    marker = tmp_path / "killed_at_step"
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--nproc-per-node", "2",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
        "--max-restarts", "1",
        str(WORKERS / "kill_rank_once.py"), "train", str(config_file), "--resume",
    ]  # fmt: skip
    env = child_env(KILL_RANK="1", KILL_AT_STEP=str(KILL_AT), KILL_MARKER=str(marker))
    finished = run(command, timeout=240, env=env)
    assert finished.returncode == 0, finished.output
    assert marker.read_text() == str(KILL_AT)  # rank 1 really died once, mid-run
    run_dir, reference = tmp_path / "killed", uninterrupted / strategy

    summary = _summary(run_dir)
    assert summary["status"] == "finished" and summary["steps"] == MAX_STEPS
    assert summary["counters"]["restarts"] == 1
    expected, got = _train_losses(reference), _train_losses(run_dir)
    assert sorted(got) == list(range(1, MAX_STEPS + 1))
    assert got == expected  # bit for bit: the same weights, data, RNG and reduction order
    # val/test loss and metrics bit for bit: the evaluated weights and buffers are the same
    final, final_reference = summary["metrics"], _summary(reference)["metrics"]
    for split in ("val", "test"):
        loss, reference_loss = final[split]["loss"], final_reference[split]["loss"]
        assert loss == reference_loss, (split, loss, reference_loss, loss - reference_loss)
        assert final[split] == final_reference[split], split
    assert _validations(run_dir) == _validations(reference)
    # the restart resumed from the last checkpoint before the kill: at most one interval redone
    resumes = [r for r in _records(run_dir) if r.get("event") == "resume"]
    assert [r["step"] for r in resumes] == [KILL_AT // EVERY * EVERY]
    assert 0 < KILL_AT - resumes[0]["step"] <= EVERY
    # and the ledger names each step's global samples once, exactly as the uninterrupted run
    ledger = expand_ledger(read_ledger(run_dir / LEDGER))
    assert [row[0] for row in ledger] == list(range(1, MAX_STEPS + 1))
    assert ledger == expand_ledger(read_ledger(reference / LEDGER))
