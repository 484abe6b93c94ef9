"""One writer per run directory: a second `train --overwrite` or a `resume` while a run
trains gets one line naming the holder's pid (the directory untouched); the lock dies with
its process (kill -9)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaletrain.cli import main

pytestmark = pytest.mark.slow

CONFIG = """
run: {name: locked, seed: 0}
data: {source: builtin, name: digits}
model: {name: mlp, hidden: [64]}
train: {max_epochs: 200, batch_size: 32, precision: '32'}
checkpoint: {every_epochs: 0, save_best: false}
log: {progress: false, tensorboard: false, report: false}
"""


def _start_training(config: Path, out: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "scaletrain", "train", str(config), f"run.out_dir={out}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = out / "locked" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.stat().st_size) and process.poll() is None:
        assert time.monotonic() < deadline, "the first run never started training"
        time.sleep(0.2)
    assert process.poll() is None, "the first run ended before the test"
    return process


def _one_error_line(capsys, *argv: str) -> str:
    capsys.readouterr()
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    return err[0]


def test_a_second_writer_is_refused_while_the_first_lives(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "runs"
    first = _start_training(config, out)
    try:
        line = _one_error_line(capsys, "train", str(config), f"run.out_dir={out}", "--overwrite")
        assert f"pid {first.pid}" in line and "locked" in line, line
        line = _one_error_line(capsys, "resume", str(out / "locked"))
        assert f"pid {first.pid}" in line, line
        assert first.poll() is None  # the first run trains on, its directory untouched
        assert (out / "locked" / "config.yaml").is_file()
        assert (out / "locked" / "metrics.jsonl").is_file()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    # killed with -9: the OS dropped the lock, and the next writer may take over
    assert main(["train", str(config), f"run.out_dir={out}", "--overwrite",
                 "train.max_epochs=1"]) == 0  # fmt: skip
