"""Faults on real processes: preemption by SIGTERM, NaN steps skipped, safe export."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import torch
from safetensors.torch import load_file
from torch.utils.data import TensorDataset

import scaletrain


def _cfg(tmp_path, name, **train):
    return {
        "run": {"name": name, "seed": 0, "out_dir": str(tmp_path)},
        "data": {"source": "builtin", "name": "digits", "layout": "flat"},
        "model": {"name": "mlp", "hidden": [32]},
        "train": {"batch_size": 32, "precision": "32", **train},
        "checkpoint": {"every_epochs": 0},
        "log": {"every_steps": 1, "progress": False, "tensorboard": False, "report": False},
    }


def test_sigterm_writes_a_checkpoint_and_resume_finishes(tmp_path):
    import yaml

    config = tmp_path / "c.yaml"
    cfg = _cfg(tmp_path, "pre", max_steps=400)
    cfg["checkpoint"]["save_best"] = False  # the only checkpoint is the one the signal asks for
    config.write_text(yaml.safe_dump(cfg))
    process = subprocess.Popen(
        [sys.executable, "-m", "scaletrain", "train", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = tmp_path / "pre" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or metrics.stat().st_size < 2000):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    checkpoints = sorted((tmp_path / "pre" / "checkpoints").glob("step_*"))
    assert len(checkpoints) == 1
    stopped_at = int(checkpoints[0].name.split("_")[1])
    summary = json.loads((tmp_path / "pre" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps"] == stopped_at

    assert 0 < stopped_at < 400
    resumed = scaletrain.resume(tmp_path / "pre")
    assert resumed.status == "finished" and resumed.exit_code == 0
    summary = json.loads((tmp_path / "pre" / "summary.json").read_text())
    assert summary["steps"] == 400 and summary["counters"]["restarts"] == 1


def test_nonfinite_steps_are_skipped_on_every_epoch(tmp_path):
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(256, 8)).astype(np.float32)
    targets = (inputs[:, 0] > 0).astype(np.int64)
    inputs[17, 3] = np.inf  # one poisoned sample: its step's loss and gradients are NaN
    cfg = _cfg(tmp_path, "nan", max_epochs=3)
    cfg["data"] = {"val_fraction": 0.0, "test_fraction": 0.0, "normalize": "none"}
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    poisoned = TensorDataset(torch.from_numpy(inputs), torch.from_numpy(targets))  # used as is
    run = scaletrain.train(cfg, model=model, data={"train": poisoned})
    assert run.status == "finished"
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["counters"]["skipped_steps"] == 3  # the poisoned step, once per epoch
    records = [
        json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert sum(r.get("event") == "skip" for r in records) == 3
    assert all(np.isfinite(r["loss"]) for r in records if r.get("split") == "train")


def test_export_is_pickle_free_and_equals_the_model(tmp_path):
    run = scaletrain.train(_cfg(tmp_path, "exp", max_steps=5))
    result = subprocess.run(
        [sys.executable, "-m", "scaletrain", "export", str(run.run_dir), "--checkpoint", "last"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    tensors = load_file(str(run.run_dir / "model.safetensors"))
    for name, value in run.model.state_dict().items():
        assert torch.equal(tensors[name], value), name
