"""Train 2 epochs, extend to 4: the same run as 4 epochs in one go, bit for bit (fp32)."""

import json

import pytest
import torch

import scaletrain


def _config(tmp_path, name, epochs):
    return {
        "run": {"name": name, "seed": 1, "out_dir": str(tmp_path)},
        "data": {"name": "digits", "layout": "flat"},
        "model": {"name": "mlp", "hidden": [32], "dropout": 0.2},  # dropout: RNG resumes
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},  # constant schedule
        "train": {"max_epochs": epochs, "batch_size": 64, "precision": "32"},
        "log": {"every_steps": 5, "progress": False, "tensorboard": False, "report": False},
    }


def _curves(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    kept = ("train", "train_epoch", "val")
    return [(r["split"], r["step"], r["loss"]) for r in records if r.get("split") in kept]


@pytest.mark.slow
def test_extended_run_equals_the_uninterrupted_one(tmp_path):
    reference = scaletrain.train(_config(tmp_path, "four", 4))
    short = scaletrain.train(_config(tmp_path, "two", 2))
    assert short.steps == reference.steps // 2
    extended = scaletrain.resume(short.run_dir, overrides=["train.max_epochs=4"])
    assert extended.status == "finished" and extended.steps == reference.steps
    assert _curves(extended.run_dir) == _curves(reference.run_dir)  # bit-exact floats
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, extended.model.state_dict()[key]), key
    assert extended.metrics["test"]["accuracy"] == reference.metrics["test"]["accuracy"]
    assert "max_epochs: 4" in (short.run_dir / "config.yaml").read_text()
    assert extended.config.train.max_epochs == 4
