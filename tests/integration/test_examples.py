"""The worked examples in examples/, each run at reduced size the way a user runs it (the
scripts as processes; the tiny API example in this process) and checked on real outcomes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from scaletrain.data.transforms.stop_words import ENGLISH_STOP_WORDS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run_script(script: Path, *args: str) -> str:
    """The example as a user runs it from the repository root; its stdout."""
    path = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def load_example(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_tiny_mse_network_prints_a_falling_loss_every_n_epochs(tmp_path, capsys):
    tiny = load_example(EXAMPLES / "tiny_mse" / "tiny_mse.py")
    losses = tiny.main(["--epochs", "30", "--every", "10", "--out", str(tmp_path)])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert [line.split()[1] for line in lines] == ["10", "20", "30"]
    assert len(losses) == 30 and losses[-1] < losses[0]
    # the printed figure is the epoch's training loss that metrics.jsonl holds
    records = [json.loads(line) for line in (tmp_path / "tiny-mse" / "metrics.jsonl").open()]
    epoch_losses = [r["loss"] for r in records if r.get("split") == "train_epoch"]
    assert epoch_losses == losses
    assert lines[-1].split()[-1] == f"{losses[-1]:.4f}"
    summary = json.loads((tmp_path / "tiny-mse" / "model_summary.json").read_text())
    assert summary["num_params"] == 10 * 20 + 20 + 20 * 5 + 5


@pytest.mark.slow
def test_mnist_schedules_compared_in_one_report(tmp_path):
    run_script(
        EXAMPLES / "mnist_schedules" / "run.py",
        *("--out", str(tmp_path), "--samples", "400"),
        *("--set", "train.max_epochs=2", "--set", "train.precision=32"),
    )
    report = tmp_path / "mnist-schedules.html"
    html = report.read_text()
    schedules = {}
    for name in ("fixed", "exponential", "step"):
        run_dir = tmp_path / f"mnist-{name}"
        assert f"mnist-{name}" in html
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["optim"]["name"] == "sgd" and config["optim"]["momentum"] == 0.9
        schedules[name] = config["optim"]["schedule"]["name"]
        spec = json.loads((run_dir / "data_spec.json").read_text())
        assert spec["input_shape"] == [784] and spec["num_outputs"] == 10
        summary = json.loads((run_dir / "model_summary.json").read_text())
        assert summary["num_params"] == 784 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
    assert schedules == {"fixed": "constant", "exponential": "exponential", "step": "step"}
    lrs = {}  # the schedules really differ: the last logged learning rate of each run
    for name in schedules:
        records = (tmp_path / f"mnist-{name}" / "metrics.jsonl").read_text().splitlines()
        lrs[name] = [json.loads(r)["lr"] for r in records if '"split": "train"' in r][-1]
    assert lrs["fixed"] == pytest.approx(0.01) and lrs["exponential"] < 0.01


@pytest.mark.slow
def test_text_classification_with_stop_words_bigrams_and_textcnn(tmp_path):
    stdout = run_script(
        EXAMPLES / "text_classification" / "run.py",
        *("--out", str(tmp_path), "--rows", "400"),
        *("--set", "train.max_epochs=6", "--set", "train.precision=32"),
    )
    run_dir = tmp_path / "textcnn-reviews"
    metrics = json.loads((run_dir / "summary.json").read_text())["metrics"]
    assert metrics["test"]["accuracy"] > 0.5  # four balanced classes: chance is 0.25
    assert metrics["test"]["num_samples"] == 80  # the 80/20 split of 400 rows
    vocabulary = json.loads((run_dir / "preprocess.json").read_text())["encoder"]["vocabulary"]
    assert not set(vocabulary) & ENGLISH_STOP_WORDS
    assert "arrived yesterday" in vocabulary and "battery" in vocabulary
    weights = load_file(run_dir / "model.safetensors")  # the exported model, pickle-free
    assert weights["blocks.0.conv.weight"].shape == (64, 64, 7)
    assert weights["hidden.0.weight"].shape == (32, 64)
    assert weights["embedding.weight"].shape == (len(vocabulary) + 1, 64)
    assert "macro avg" in stdout and "confusion matrix" in stdout
    report = (run_dir / "report.html").read_text()
    assert "Confusion" in report or "confusion" in report
    with np.load(run_dir / "predictions" / "test.npz") as predictions:
        assert len(predictions["pred"]) == 80
