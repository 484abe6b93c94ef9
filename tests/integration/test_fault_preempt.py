"""Issue 5, test 7 through the launcher: SIGTERM to `scaletrain train --nproc 2` (torchrun's
agent runs in that process and passes the signal to its workers) mid-run. Both ranks stop
after the same step, one final checkpoint is written, the job exits 143, and
`scaletrain resume --nproc 2` finishes the run."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import yaml
from distributed_helpers import kill_tree, start_cli

pytestmark = pytest.mark.slow

MAX_STEPS = 2000  # far more than the run reaches before the signal


def _finish(process: subprocess.Popen, timeout: float) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(process.pid)
        raise AssertionError(f"no exit within {timeout} s: {process.communicate()[0]}") from None
    return output


def test_sigterm_to_the_launcher_checkpoints_once_and_resume_finishes(tmp_path):
    config = {
        "run": {"name": "pre", "seed": 0, "out_dir": str(tmp_path)},
        "data": {"source": "builtin", "name": "digits", "layout": "flat"},
        "model": {"name": "mlp", "hidden": [32]},
        "train": {"max_steps": MAX_STEPS, "batch_size": 32, "precision": "32"},
        "parallel": {"strategy": "ddp", "timeout_s": 60},
        "checkpoint": {"every_epochs": 0, "save_best": False},
        "log": {"every_steps": 1, "progress": False, "tensorboard": False, "report": False},
    }
    config_file = tmp_path / "pre.yaml"
    config_file.write_text(yaml.safe_dump(config))
    launcher = start_cli("train", str(config_file), "--nproc", "2")
    metrics = tmp_path / "pre" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not metrics.exists() or metrics.stat().st_size < 3000):
        assert launcher.poll() is None, launcher.communicate()[0]
        time.sleep(0.2)
    launcher.send_signal(signal.SIGTERM)
    output = _finish(launcher, 60)
    assert launcher.returncode == 143, output

    checkpoints = sorted((tmp_path / "pre" / "checkpoints").glob("step_*"))
    assert len(checkpoints) == 1 and not checkpoints[0].name.endswith(".tmp"), checkpoints
    stopped_at = int(checkpoints[0].name.removeprefix("step_"))
    assert 0 < stopped_at < MAX_STEPS
    assert sorted(p.name for p in checkpoints[0].glob("rank_*.json")) == [
        "rank_00000.json",
        "rank_00001.json",
    ]  # both ranks took part in the same save
    summary = json.loads((tmp_path / "pre" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps"] == stopped_at
    events = [json.loads(line) for line in metrics.read_text().splitlines()]
    saves = [e for e in events if e.get("event") == "checkpoint"]
    assert [e["detail"] for e in saves] == [f"interrupted by signal 15: {checkpoints[0].name}"]

    # the rest of the run, from that checkpoint (a short tail: fewer steps to go)
    config["train"]["max_steps"] = stopped_at + 5
    (tmp_path / "pre" / "config.yaml").write_text(yaml.safe_dump(config))
    resumed = start_cli("resume", str(tmp_path / "pre"), "--nproc", "2")
    output = _finish(resumed, 120)
    assert resumed.returncode == 0, output
    summary = json.loads((tmp_path / "pre" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == stopped_at + 5
    assert summary["counters"]["restarts"] == 1
