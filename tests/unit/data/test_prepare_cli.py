"""`scaletrain prepare` then `scaletrain train` on the shards, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml


def scaletrain(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scaletrain", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow  # end-to-end (or several processes): make test, not test-fast
def test_prepare_then_train_from_shards_matches_in_memory(tmp_path):
    config = {
        "run": {"name": "mem", "out_dir": str(tmp_path / "runs")},
        "data": {"source": "builtin", "name": "wine"},
        "model": {"name": "mlp", "hidden": [16]},
        "train": {"max_epochs": 3, "batch_size": 32, "device": "cpu", "precision": "32"},
        "log": {"progress": False, "tensorboard": False, "report": False},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    prepared = scaletrain(
        "prepare", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "sh"), "--shard-size", "2kB"
    )
    assert prepared.returncode == 0, prepared.stderr
    assert "prepared" in prepared.stderr and "train 124" in prepared.stderr
    memory = scaletrain("train", str(tmp_path / "c.yaml"))
    shards = scaletrain(
        "train",
        str(tmp_path / "c.yaml"),
        "run.name=shards",
        "data.source=shards",
        f"data.path={tmp_path / 'sh'}",
    )
    assert memory.returncode == 0 and shards.returncode == 0, shards.stderr
    summaries = [
        json.loads((tmp_path / "runs" / name / "summary.json").read_text())
        for name in ("mem", "shards")
    ]
    # same split, statistics and sample order: the same training run
    assert summaries[0]["metrics"] == summaries[1]["metrics"]
    from scaletrain.cli import main  # in-process: one more subprocess would cost seconds

    assert main(["prepare", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "sh")]) == 2
