"""Issue 5, test 10: a loader worker that dies, or a sample that raises, stops the run with
one line naming the sample (and the worker), never a hang."""

from __future__ import annotations

import re
import sys

import pytest
from distributed_helpers import WORKERS, run

BAD_INDEX = 77  # workers/loader_fault.py
BOUND_S = 90  # a process start, a few steps and the error, on a loaded 2-core machine


def _fail(tmp_path, mode: str, num_workers: int) -> str:
    command = [sys.executable, str(WORKERS / "loader_fault.py"), str(tmp_path), mode]
    finished = run([*command, str(num_workers)], timeout=BOUND_S)  # a hang fails here
    assert finished.returncode == 1, finished.output
    lines = [line for line in finished.output.splitlines() if line.startswith("FAILED ")]
    assert len(lines) == 1, finished.output
    return lines[0]


def test_killed_loader_worker_stops_the_run_naming_the_worker(tmp_path):
    line = _fail(tmp_path, "kill", 2)
    assert line.startswith("FAILED DataError: loader worker "), line
    assert re.search(r"loader worker [01] of 2 \(pid \d+\) died \(", line), line
    # the samples the run was waiting for, named through the split back to the user's Dataset
    assert re.search(r"micro batch \d+ of this pass: Fragile\[\d+", line), line


@pytest.mark.parametrize(
    ("mode", "num_workers"), [("raise", 0), ("raise_in_loader", 0), ("raise_in_loader", 2)]
)
def test_sample_that_raises_stops_the_run_naming_the_sample(tmp_path, mode, num_workers):
    line = _fail(tmp_path, mode, num_workers)
    assert line.startswith("FAILED DataError: "), line  # a user error: one line, exit 2 in CLI
    assert f"Fragile[{BAD_INDEX}]: ValueError: cannot decode images/{BAD_INDEX:05d}.png" in line
    if num_workers:
        assert "(in DataLoader worker process" in line, line
