"""Interrupted + resumed == uninterrupted: bitwise weights and identical logged losses."""

import json
import shutil

import pytest
import torch

import scaletrain
from scaletrain.api import resume

MODELS = {
    "mlp": ({"name": "mlp", "hidden": [32], "dropout": 0.2}, "flat"),  # dropout: RNG resumes
    # batch norm statistics, and channels_last weights (train.channels_last: auto on CPU)
    "cnn": ({"name": "cnn", "channels": [8, 16], "head": [32], "dropout": 0.2}, "image"),
}


def _config(tmp_path, name, model="mlp"):
    model_cfg, layout = MODELS[model]
    return {
        "run": {"name": name, "seed": 3, "out_dir": str(tmp_path)},
        "data": {"source": "builtin", "name": "digits", "layout": layout},
        "model": model_cfg,
        "optim": {"name": "adamw", "lr": 0.01, "schedule": {"name": "cosine"}},
        "train": {"max_steps": 40, "batch_size": 32, "precision": "32", "eval_every_steps": 10},
        "checkpoint": {"every_steps": 10, "every_epochs": 0, "keep_last": 3},
        "log": {"every_steps": 3, "progress": False, "tensorboard": False, "report": False},
    }


def _train_losses(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r.get("split") == "train"}


def _weights(run):
    return {k: v.clone() for k, v in run.model.state_dict().items()}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_interrupt_then_resume_matches_uninterrupted(tmp_path, model, interrupt_at):
    reference = scaletrain.train(_config(tmp_path, "full", model))

    interrupted = scaletrain.train(_config(tmp_path, "cut", model), callbacks=[interrupt_at(25)])
    assert interrupted.status == "interrupted" and interrupted.exit_code == 130
    run_dir = interrupted.run_dir
    # Simulate a crash instead of a clean Ctrl-C: drop the interrupt checkpoint, so the
    # resume must replay steps 21-26 from the step-20 checkpoint.
    shutil.rmtree(run_dir / "checkpoints" / "step_00000026")  # stopped at the next boundary

    resumed = resume(run_dir)
    assert resumed.status == "finished"
    for key, value in _weights(reference).items():
        assert torch.equal(value, _weights(resumed)[key]), key
    assert _train_losses(run_dir) == _train_losses(reference.run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["counters"]["restarts"] == 1
    assert summary["metrics"]["test"] == reference.metrics["test"]


def test_resume_warns_once_when_the_training_config_changed(tmp_path):
    import warnings

    import yaml

    from scaletrain.checkpoint import CheckpointWarning

    config = _config(tmp_path, "changed")
    config["train"]["max_steps"] = 4
    config["optim"]["schedule"] = {"name": "constant"}
    run_dir = scaletrain.train(config).run_dir
    calls = [None]

    def resume_after(edit) -> list[str]:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        edit(saved)
        # one more step each time: a finished run is not resumed. The length is not part of
        # the math hash under a constant schedule (test_extend.py covers cosine's case)
        saved["optim"]["schedule"] = {"name": "constant"}
        saved["train"]["max_steps"] = 4 + len(calls)
        calls.append(edit)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            resume(run_dir)
        return [str(w.message) for w in caught if issubclass(w.category, CheckpointWarning)]

    # logging, checkpointing and parallel settings may change: no warning
    assert resume_after(lambda c: c["log"].update(every_steps=2)) == []
    assert resume_after(lambda c: c["parallel"].update(timeout_s=60)) == []
    # the training math changed (the hash of data/model/optim/loss/train/seed): one line
    messages = resume_after(lambda c: c["optim"].update(lr=0.02))
    assert len(messages) == 1 and "step_00000006" in messages[0], messages  # 4, +1, +1
    assert "saved under another config" in messages[0] and "\n" not in messages[0]
