"""async_ps with a spare worker across a stop and `scaletrain resume`: a worker is SIGKILLed
and a spare takes it over, then the server is SIGKILLed (the run stops, as for any lost
server), and the resumed run finishes from the servers' committed shards and worker 0's
last checkpoint. Asserted: what each attempt pushed, step by step, for every logical worker
(the documented cost of a stop: steps after the checkpoint are pushed again, updates after
the last commit are lost), the takeover in metrics.jsonl and report.html, and a model that
learned."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from distributed_helpers import child_env, kill_tree, run
from safetensors.torch import load_file
from test_async_ps import applied_log, heartbeat, process_of_rank, start_ps, wait_for_step
from test_async_ps import write_config as write_ps_config

pytestmark = pytest.mark.slow

STEPS = 200
EVERY = 20  # worker 0 checkpoints every 20 steps
SERVER_RANK = 3  # workers 0 and 1, spare0 (rank 2), server 0 (rank 3)
PATIENCE = 300  # seconds for any one wait: 4 processes on a shared 2-core machine


def write_config(tmp_path):
    shards = tmp_path / "shards"
    config = write_ps_config(
        tmp_path,
        train={
            "max_steps": STEPS,
            "batch_size": 32,
            "precision": "32",
            "device": "cpu",
            "num_threads": 1,
        },
        model={"name": "mlp", "hidden": [256, 256]},
        # a constant lr: a resume may extend the run (cosine would decay over its length)
        optim={"name": "sgd", "lr": 0.05, "momentum": 0.9, "schedule": {"name": "constant"}},
        checkpoint={"every_steps": EVERY, "every_epochs": 0, "save_best": False},
        parallel={"ps": {"shards_dir": str(shards), "flush_every": 5, "spare_workers": 1}},
        log={"progress": False, "tensorboard": False, "report": True, "every_steps": 10},
    )
    return config, shards


def wait_for_takeover(run_dir, victim: int, *, steps: int, timeout: float = PATIENCE) -> dict:
    """Rank 1's heartbeat once a process other than `victim` trained `steps` steps as it."""
    deadline, first = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        beat = heartbeat(run_dir, 1)
        if beat and beat["pid"] != victim:
            first = beat["step"] if first is None else first
            if beat["step"] >= first + steps:
                return beat
        time.sleep(0.02)
    raise AssertionError("no spare took worker 1 over")


def report_page(path: Path):
    """report.html read back by the report tests' parser (tables by id, cells as text)."""
    builders = Path(__file__).parents[1] / "unit" / "report" / "run_builders.py"
    spec = importlib.util.spec_from_file_location("report_run_builders", builders)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclasses look their module up
    spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules[spec.name].read_page(path.read_text())


def pushes(records: list[dict], worker: int) -> list[int]:
    return [r["step"] for r in records if "event" not in r and r["worker"] == worker]


def test_a_spare_took_over_then_the_run_stopped_and_resumed_to_the_end(tmp_path):
    config, shards = write_config(tmp_path)
    out = tmp_path / "async"
    run_dir = out / "ps"
    process = start_ps(config, out, nproc=4)
    try:
        server = process_of_rank(process.pid, SERVER_RANK)
        victim = wait_for_step(run_dir, rank=1, step=10, timeout=PATIENCE)["pid"]
        writer = heartbeat(run_dir, 0)["pid"]
        # worker 0 waits while the spare takes over: on an idle machine it would otherwise
        # run to its last step first, and the server's death would come after the run's end
        os.kill(writer, signal.SIGSTOP)
        os.kill(victim, signal.SIGKILL)
        try:
            wait_for_takeover(run_dir, victim, steps=10)
        finally:
            os.kill(writer, signal.SIGCONT)
        wait_for_step(run_dir, rank=0, step=3 * EVERY, timeout=PATIENCE)  # a checkpoint past it
        os.kill(server, signal.SIGKILL)
        output, _ = process.communicate(timeout=PATIENCE)
    except BaseException:
        kill_tree(process.pid)
        raise
    assert process.returncode == 1, output
    assert "error: parameter server 0 (rank 3) stopped answering" in output
    first = applied_log(run_dir)
    flushed = json.loads((shards / "server_0" / "manifest.json").read_text())["version"]

    command = [sys.executable, "-m", "scaletrain", "resume", str(run_dir), "--nproc", "4"]
    finished = run(command, timeout=2 * PATIENCE, env=child_env())
    assert finished.returncode == 0, finished.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == STEPS
    second = applied_log(run_dir)[len(first) :]

    # attempt 1: worker 0 pushed 1..a0; worker 1 pushed 1..r as itself, then the spare
    # r+1..a1 (no step twice, none skipped: the takeover's bound with one server)
    (rejoined,) = [r for r in first if r.get("event") == "worker_rejoined"]
    assert (rejoined["worker"], rejoined["spare"], rejoined["incarnation"]) == (1, "spare0", 1)
    lost_at = next(i for i, r in enumerate(first) if r.get("event") == "worker_lost")
    taken = rejoined["step"]
    assert pushes(first[:lost_at], 1) == list(range(1, taken + 1))
    steps_1 = pushes(first[lost_at:], 1)
    assert steps_1 == list(range(taken + 1, taken + 1 + len(steps_1))) and len(steps_1) >= 10
    steps_0 = pushes(first, 0)
    assert steps_0 == list(range(1, len(steps_0) + 1)) and len(steps_0) >= 3 * EVERY

    # attempt 2: every process fresh (no takeover carries over, the spare waits again),
    # every logical worker restarts from worker 0's last checkpoint c: steps c+1..STEPS once
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    (resume,) = [r for r in events if r.get("event") == "resume"]
    c = resume["step"]
    assert c % EVERY == 0 and 2 * EVERY <= c <= len(steps_0)
    for worker in (0, 1):
        assert pushes(second, worker) == list(range(c + 1, STEPS + 1)), worker
    assert not any(r.get("event") for r in second)  # nobody died in attempt 2
    # so each worker's steps 1..c were pushed once, c+1..(its last push in attempt 1) twice,
    # and the server lost the updates it applied after its last commit: it went on from it
    assert [r["version"] for r in first if "event" not in r][-1] >= flushed
    assert next(r["version"] for r in second if r["applied"]) == flushed + 1

    # the takeover of attempt 1 is in the resumed run's metrics.jsonl and ps record
    (lost,) = [r for r in events if r.get("event") == "worker_lost"]
    assert lost["detail"] == "worker rank 1 died; a spare took its place"
    (rejoin,) = [r for r in events if r.get("event") == "worker_rejoined"]
    assert (rejoin["worker"], rejoin["spare"], rejoin["from_step"]) == (1, "spare0", taken + 1)
    # placed at worker 0's step when it happened: the step axis of the report's curves
    assert lost["step"] == rejoin["step"] == rejoined["run_step"]
    assert rejoined["run_step"] in steps_0  # (worker 1 may lag worker 0 by many steps)
    (ps,) = [r["ps"] for r in events if "ps" in r]
    assert [t["worker"] for t in ps["rejoined"]] == [1]
    # and in report.html's parameter-server section, read back as a table
    page = report_page(run_dir / "report.html")
    _, *rows = [[cell.text for cell in row] for row in page.tables["ps-takeovers"]]
    (row,) = rows
    assert row[0] == "worker 1" and row[2:] == [
        str(rejoined["run_step"]),
        "worker1",
        "spare0",
        "2",  # spare0's global rank
        "1",  # its incarnation
        str(taken + 1),
        str(rejoined["version"]),
    ]

    # the model learned: finite parameters, loss down from the first logged steps
    served = load_file(str(run_dir / "ps" / "server_0.safetensors"))
    assert all(torch.isfinite(value).all() for value in served.values())
    losses = [r["loss"] for r in events if "loss" in r and "event" not in r]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < 0.5 * losses[0], losses

    # extended past its end (resumed with more steps): the recalled takeover is logged once
    before = len(applied_log(run_dir))
    extend = [*command, f"train.max_steps={STEPS + EVERY}"]
    finished = run(extend, timeout=2 * PATIENCE, env=child_env())
    assert finished.returncode == 0, finished.output
    third = applied_log(run_dir)[before:]
    for worker in (0, 1):
        assert pushes(third, worker) == list(range(STEPS + 1, STEPS + EVERY + 1)), worker
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    membership = [r for r in events if r.get("event") in ("worker_lost", "worker_rejoined")]
    assert membership == [lost, rejoin]
    *_, ps = [r["ps"] for r in events if "ps" in r]  # the extension's (the report reads it)
    assert [r["event"] for r in ps["membership"]] == ["worker_lost", "worker_rejoined"]
