"""Defects of issue #12 section 1, each found by trying the trainer as a user would.

Multi-process combinations (FSDP x batch norm x bf16, FSDP x SGD, FSDP x penalties) are in
`test_combinations.py`; the default config under FSDP in `test_launch.py`.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

import scaletrain
from scaletrain.config import load_config
from scaletrain.errors import ConfigError

pytestmark = pytest.mark.slow


def _config(tmp_path, name: str, **train) -> dict:
    return {
        "run": {"name": name, "seed": 0, "out_dir": str(tmp_path)},
        "data": {"source": "builtin", "name": "digits"},
        "model": {"name": "mlp", "hidden": [32]},
        "optim": {"name": "adamw", "lr": 0.01},
        "train": {"max_epochs": 3, "batch_size": 128, "precision": "32", **train},
        "log": {"progress": False, "tensorboard": False, "report": False},
    }


def _records(run_dir, split: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("split") == split]


def test_the_last_epoch_is_validated_and_counted(tmp_path):
    """Before: the loop stopped before the last epoch's validation, so a 3-epoch run
    reported 2 epochs and chose its best weights without the last one."""
    run = scaletrain.train(_config(tmp_path, "epochs"))
    summary = json.loads((run.run_dir / "summary.json").read_text())
    steps_per_epoch = json.loads((run.run_dir / "plan.json").read_text())["steps_per_epoch"]
    assert steps_per_epoch > 1
    assert summary["epochs"] == 3 and summary["steps"] == 3 * steps_per_epoch
    val = _records(run.run_dir, "val")
    assert [r["step"] for r in val] == [steps_per_epoch * e for e in (1, 2, 3)]
    assert [r["epoch"] for r in val] == [1, 2, 3]
    # one training loss and accuracy per epoch, from the steps' own outputs
    epochs = _records(run.run_dir, "train_epoch")
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert all(0 <= r["metrics"]["accuracy"] <= 1 for r in epochs)
    assert epochs[-1]["loss"] < epochs[0]["loss"]


def test_the_summary_says_which_weights_the_metrics_are_of(tmp_path):
    """Best weights older than the last: both sets of metrics, each named."""
    config = _config(tmp_path, "weights")
    config["train"]["monitor"] = {"metric": "val.loss", "mode": "max"}  # the first is best
    run = scaletrain.train(config)
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["weights"] == {"name": "best", "step": summary["best_step"]}
    assert summary["best_step"] < summary["steps"]
    assert summary["metrics_last"]["val"]["loss"] < summary["metrics"]["val"]["loss"]
    last_val = _records(run.run_dir, "val")[-1]
    assert summary["metrics_last"]["val"]["loss"] == pytest.approx(last_val["loss"], rel=1e-6)
    # without a best checkpoint the metrics are the last weights', named so
    config = _config(tmp_path, "last")
    config["checkpoint"] = {"save_best": False}
    run = scaletrain.train(config)
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["weights"] == {"name": "last", "step": summary["steps"]}
    assert summary["metrics_last"] is None
    assert summary["metrics"]["val"]["loss"] == pytest.approx(
        _records(run.run_dir, "val")[-1]["loss"], rel=1e-6
    )


def test_bf16_true_trains_and_validates(tmp_path):
    """Before: `expected m1 and m2 to have the same dtype` at the first validation."""
    run = scaletrain.train(_config(tmp_path, "bf16-true", precision="bf16-true"))
    assert run.status == "finished"
    assert run.metrics["val"]["accuracy"] > 0.5
    assert len(_records(run.run_dir, "val")) == 3


@pytest.mark.parametrize("value", ["32", "32-true", "16", "bf16", "bf16-mixed"])
def test_precision_is_accepted_as_lightning_spells_it(value):
    """Before: `train.precision=32` on the command line was read as the int 32, refused."""
    expected = {"32": "32", "32-true": "32", "16": "16-mixed", "bf16": "bf16-mixed"}
    cfg = load_config({}, [f"train.precision={value}"])
    assert cfg.train.precision == expected.get(value, value)
    assert load_config({"train": {"precision": 32}}).train.precision == "32"


def test_a_one_sample_batch_through_batch_norm_is_refused_before_the_run(tmp_path):
    """Before: a raw ValueError traceback from F.batch_norm at the first step."""
    config = _config(tmp_path, "bn", batch_size=1)
    config["model"] = {"name": "mlp", "hidden": [16], "batch_norm": True}
    with pytest.raises(ConfigError) as caught:
        scaletrain.train(config)
    message = str(caught.value)
    assert "train.batch_size" in message and "model.batch_norm" in message
    assert "\n" not in message
    assert not (tmp_path / "bn").exists()  # refused before the run directory was made
    # 1,257 samples in batches of 64 over 2 micro batches of 32: no single-sample batch
    config["train"].update(batch_size=64, micro_batch_size=32, max_epochs=1)
    assert scaletrain.train(config).status == "finished"


class SigtermAt:
    """Callback: a real SIGTERM to this process at the end of update `step`."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, state) -> None:
        if state.step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_sigterm_read_on_an_evaluation_step_stops_there(tmp_path):
    """Before: the evaluation's verdict overwrote `interrupted`, and the run trained one
    more step. The signal of step 4 is read at step 5's boundary, a validation step."""
    config = _config(tmp_path, "sigterm", max_steps=9, eval_every_steps=5)
    run = scaletrain.train(config, callbacks=[SigtermAt(4)])
    assert run.status == "interrupted" and run.exit_code == 128 + signal.SIGTERM
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["steps"] == 5 and summary["status"] == "interrupted"
    assert (run.run_dir / "checkpoints" / "step_00000005").is_dir()
    assert [r["step"] for r in _records(run.run_dir, "val")] == []  # stopping, not validating


def test_a_config_refused_by_the_built_loss_leaves_no_run_directory(tmp_path):
    """Ten classes, two weights: refused when the loss is built, after the run directory
    was made; the directory goes, so the corrected rerun is not refused as existing."""
    config = _config(tmp_path, "weights-mismatch", max_epochs=1)
    config["loss"] = {"class_weights": [1.0, 2.0]}
    with pytest.raises(ConfigError, match="loss.class_weights"):
        scaletrain.train(config)
    assert not (tmp_path / "weights-mismatch").exists()
    del config["loss"]
    assert scaletrain.train(config).status == "finished"
