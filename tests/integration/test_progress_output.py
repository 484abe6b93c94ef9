"""What `scaletrain train` prints off a terminal (make, CI, logs): a real subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
STEP_LINE = re.compile(
    r"^step (\d+)/60  epoch (\d)/3  loss [\d.]+  lr [\d.e+-]+  [\d,]+ samples/s"
    r"(  MFU [\d.]+%)?  elapsed \d+:\d\d  eta \d+:\d\d$"
)
VAL_LINE = re.compile(r"^epoch (\d)/3  val\.loss [\d.]+  val\.accuracy [\d.]+(  best)?$")


@pytest.mark.slow  # end-to-end training in a subprocess
def test_plain_output_carries_epoch_elapsed_eta_and_one_line_per_validation(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scaletrain",
            "train",
            str(ROOT / "configs/default.yaml"),
            f"run.out_dir={tmp_path}",
            "train.max_epochs=3",  # 20 steps per epoch
            "train.precision=bf16-mixed",
            "log.every_steps=4",
            "log.report=false",
            "log.tensorboard=false",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    steps = [STEP_LINE.match(line) for line in lines if line.startswith("step ")]
    assert steps and all(steps), [line for line in lines if line.startswith("step ")]
    # steps 8, 12, ... 60 are log steps; a line for each tenth of the run
    assert [int(m.group(1)) for m in steps] == [8, 12, 20, 24, 32, 36, 44, 48, 56, 60]
    assert [int(m.group(2)) for m in steps] == [1, 1, 1, 2, 2, 2, 3, 3, 3, 3]
    validations = [VAL_LINE.match(line) for line in lines if line.startswith("epoch ")]
    assert len(validations) == 3 and all(validations), lines
    assert [int(m.group(1)) for m in validations] == [1, 2, 3]
    assert validations[0].group(2) == "  best"  # the first validation is the best so far
    summary = json.loads((tmp_path / "digits-cnn" / "summary.json").read_text())
    best_step = summary["best_step"]
    improved = [20 * (i + 1) for i, m in enumerate(validations) if m.group(2)]
    assert best_step == improved[-1]  # `best` marks exactly the monitor's improvements
    # the results table says which weights its numbers come from
    assert f"Results: best weights (step {best_step})" in result.stdout + result.stderr
