"""`model.name=resnet` from the command line: one process, FSDP over 2 ranks (BasicBlock the
unit), and configs/resnet-digits.yaml reaching its stated accuracy."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from distributed_helpers import child_env, run

pytestmark = pytest.mark.slow  # whole training runs, one of them on 2 processes

ROOT = Path(__file__).parents[2]


def scaletrain(*args: str, timeout: float = 240) -> tuple[int, str]:
    finished = run([sys.executable, "-m", "scaletrain", *args], timeout=timeout, env=child_env())
    return finished.returncode, finished.output


def finished_summary(run_dir: Path, *, world_size: int) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["world_size"] == world_size, summary
    layers = json.loads((run_dir / "model_summary.json").read_text())["layers"]
    assert [layer["type"] for layer in layers].count("BasicBlock") == 8  # ResNet-18 was built
    return summary


@pytest.mark.parametrize("nproc", [1, 2])
def test_default_config_switched_to_resnet_trains_an_epoch(tmp_path, nproc):
    launch = ["--nproc", "2", "parallel.strategy=fsdp"] if nproc == 2 else []
    code, output = scaletrain(
        "train",
        str(ROOT / "configs" / "default.yaml"),
        "model.name=resnet",
        "model.width=8",
        "train.max_epochs=1",
        "train.precision=bf16-mixed",
        f"run.out_dir={tmp_path}",
        *launch,
    )
    assert code == 0, output
    assert "dropped model.channels, model.head" in output  # the cnn's options, noted
    summary = finished_summary(tmp_path / "digits-cnn", world_size=nproc)
    assert summary["precision"] == "bf16-mixed"
    # one epoch of 10 classes: above chance, whatever the machine
    assert 0.2 < summary["metrics"]["val"]["accuracy"] <= 1, summary["metrics"]


def test_resnet_digits_config_reaches_its_stated_accuracy(tmp_path):
    code, output = scaletrain(
        "train",
        str(ROOT / "configs" / "resnet-digits.yaml"),
        "train.precision=bf16-mixed",
        "log.report=false",
        f"run.out_dir={tmp_path}",
    )
    assert code == 0, output
    summary = finished_summary(tmp_path / "digits-resnet", world_size=1)
    assert summary["metrics"]["test"]["accuracy"] >= 0.95, summary["metrics"]
