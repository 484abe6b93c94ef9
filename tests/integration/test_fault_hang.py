"""A rank that stalls before a collective: every process exits non-zero within
parallel.timeout_s + 30 s, and the output names the stalled rank, its last completed step
and (faulthandler) the Python stack it was stuck in."""

import json
import time

import pytest
from distributed_helpers import WORKERS, torchrun

TIMEOUT_S = 8  # parallel.timeout_s for this run: the bound is TIMEOUT_S + 30 s


@pytest.mark.slow  # end-to-end (or several processes): make test, not test-fast
def test_stalled_rank_is_named_and_nobody_hangs(tmp_path):
    stall_rank, stall_after = 1, 3
    started = time.monotonic()
    finished = torchrun(
        [str(WORKERS / "stall_rank.py"), str(tmp_path), str(stall_rank), str(stall_after),
         str(TIMEOUT_S)],
        timeout=TIMEOUT_S + 120,  # generous: startup on a loaded machine is not the bound
    )  # fmt: skip
    elapsed = time.monotonic() - started
    output = finished.output
    assert finished.returncode != 0, output
    # the failing rank names the one that never reached the collective
    assert "stalled rank(s)" in output, output
    assert f"rank {stall_rank} (pid" in output and f"last completed step {stall_after}" in output
    # the stalled rank's own watchdog printed where it was stuck (the sleep in the worker)
    assert "Timeout (" in output and "in on_step_end" in output, output
    heartbeat = tmp_path / "stall" / "heartbeat"
    records = [json.loads(p.read_text()) for p in sorted(heartbeat.glob("rank_*.json"))]
    assert [r["step"] for r in records] == [stall_after, stall_after]
    assert records[0]["error"] and not records[1]["error"]
    # from the stall to the last exit: within the collective timeout plus 30 s
    stalled_at = records[1]["time"]
    assert time.time() - stalled_at < TIMEOUT_S + 30 + 5, (elapsed, output[-3000:])
