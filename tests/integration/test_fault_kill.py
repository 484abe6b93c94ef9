"""SIGKILL at random steps (and once inside a save), resume each time: the final weights,
optimizer state, logged losses and sample ledger are bitwise those of an uninterrupted run."""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from scaletrain.checkpoint.export import read_full_tensors
from scaletrain.train.ledger import LEDGER, expand_ledger, read_ledger

WORKER = Path(__file__).parent / "workers" / "kill_at.py"
MAX_STEPS, EVERY = 60, 5  # 60 steps of 32 samples cross the first epoch's end (1437 samples)


def _config(tmp_path: Path, name: str) -> Path:
    config = {
        "run": {"name": name, "seed": 7, "out_dir": str(tmp_path)},
        "data": {"source": "builtin", "name": "digits", "layout": "flat"},
        "model": {"name": "mlp", "hidden": [32], "dropout": 0.2},  # dropout: RNG resumes too
        "optim": {"name": "adamw", "lr": 0.01, "schedule": {"name": "cosine"}},
        "train": {
            "max_steps": MAX_STEPS,
            "batch_size": 32,
            "precision": "32",
            "eval_every_steps": 20,
            "num_threads": 1,
        },
        "checkpoint": {"every_steps": EVERY, "every_epochs": 0, "keep_last": 2},
        "log": {"every_steps": 1, "progress": False, "tensorboard": False, "report": False},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _start(args: list[str], **kill) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILL_")}
    env.update({key: str(value) for key, value in kill.items()})
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _killed(process: subprocess.Popen, what: str) -> None:
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL, f"{what}: exit {process.returncode}\n{stderr}"


def _kill_plan(rng: random.Random) -> list[dict]:
    """Five kills after random updates and one inside the save that follows the second."""
    steps = sorted(rng.sample(range(EVERY + 1, MAX_STEPS - 1), 5))
    save_step = (steps[1] // EVERY + 1) * EVERY  # the first save after resuming from step 2's
    plan = [{"KILL_AT_STEP": step} for step in steps]
    plan.insert(2, {"KILL_IN_SAVE_STEP": save_step})
    return plan


def _train_losses(run_dir: Path) -> dict[int, float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return {r["step"]: r["loss"] for r in records if r.get("split") == "train"}


def _digest(checkpoint: Path) -> str:
    """SHA-256 over every model and optimizer tensor of a checkpoint, in name order."""
    digest = hashlib.sha256()
    for prefix in ("model.", "optim."):
        tensors = read_full_tensors(checkpoint, prefix=prefix)
        for name in sorted(tensors):
            digest.update(name.encode())
            digest.update(tensors[name].reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.slow  # end-to-end (or several processes): make test, not test-fast
def test_sigkill_at_random_steps_then_resume_is_bitwise_exact(tmp_path):
    seed = random.SystemRandom().randrange(1 << 30)
    plan = _kill_plan(random.Random(seed))
    context = f"seed {seed}, kills {plan}"
    reference = _start(["train", str(_config(tmp_path, "whole"))])
    first = _start(["train", str(_config(tmp_path, "killed"))], **plan[0])
    _killed(first, context)
    run_dir = tmp_path / "killed"
    # the save killed on purpose leaves its .tmp until the next save clears it (a later kill
    # may come first); no other half-written save may ever linger
    allowed = {f"step_{plan[2]['KILL_IN_SAVE_STEP']:08d}.tmp"}
    for kill in plan[1:]:
        _killed(_start(["resume", str(run_dir)], **kill), context)
        leftovers = {path.name for path in (run_dir / "checkpoints").glob("step_*.tmp")}
        assert leftovers <= allowed, context
    last = _start(["resume", str(run_dir)])
    _, stderr = last.communicate(timeout=120)
    assert last.returncode == 0, stderr
    assert not list((run_dir / "checkpoints").glob("step_*.tmp")), context
    _, stderr = reference.communicate(timeout=120)
    assert reference.returncode == 0, stderr

    final = f"checkpoints/step_{MAX_STEPS:08d}"
    assert _digest(run_dir / final) == _digest(tmp_path / "whole" / final), context
    assert _train_losses(run_dir) == _train_losses(tmp_path / "whole"), context
    assert sorted(_train_losses(run_dir)) == list(range(1, MAX_STEPS + 1))
    ledger = expand_ledger(read_ledger(run_dir / LEDGER))
    assert ledger == expand_ledger(read_ledger(tmp_path / "whole" / LEDGER)), context
    assert [row[0] for row in ledger] == list(range(1, MAX_STEPS + 1))  # each step once
    assert ledger[-1][1] == 1  # the run crossed into the second epoch
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["counters"]["restarts"] == len(plan), context
    assert summary["counters"]["skipped_steps"] == 0
