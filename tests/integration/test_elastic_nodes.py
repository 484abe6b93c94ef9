"""`--nnodes 1:2`: two agents on this host are two nodes of one elastic job. Node 1 (agent
and worker) is SIGKILLed after the first checkpoint; node 0's agent re-forms the job alone, its
restarted worker resumes from the newest checkpoint at world size 1 and finishes the run,
and the sample ledger is exactly the planned global sample order (nothing dropped, only
the steps since that checkpoint trained again)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from distributed_helpers import child_env, descendants, free_port, kill_tree

from scaletrain.train.ledger import LEDGER, expand_ledger, read_ledger

pytestmark = pytest.mark.slow

MAX_STEPS, EVERY, BATCH = 60, 10, 32  # 1257 train samples: 40 steps an epoch, 1.5 epochs
CONFIG = {
    "run": {"name": "elastic", "seed": 3},
    "data": {"source": "builtin", "name": "digits", "layout": "flat"},
    "model": {"name": "mlp", "hidden": [16]},
    "optim": {"name": "adamw", "lr": 0.01},
    "train": {"max_steps": MAX_STEPS, "batch_size": BATCH, "precision": "32", "device": "cpu"},
    "parallel": {"strategy": "ddp", "timeout_s": 30},
    "checkpoint": {"every_steps": EVERY, "every_epochs": 0, "save_best": False, "keep_last": 3},
    "log": {"every_steps": 1, "progress": False, "tensorboard": False, "report": False},
}


def start_node(config: Path, out: Path, log: Path, *, node_rank: int, endpoint: str):
    command = [
        sys.executable, "-m", "scaletrain", "train", str(config), "--out", str(out), "--resume",
        "--nproc", "1", "--nnodes", "1:2", "--node-rank", str(node_rank),
        "--rdzv-endpoint", endpoint, "--rdzv-timeout", "60", "--rdzv-last-call", "3",
        "--max-restarts", "2",
    ]  # fmt: skip
    with open(log, "w") as handle:  # a file, not a pipe nobody reads while we wait
        return subprocess.Popen(
            command,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=child_env(),
            start_new_session=True,
        )


def planned_rows(num_samples: int) -> list[tuple]:
    """(step, epoch, start, stop, skipped) of every step of the uninterrupted plan."""
    rows, epoch = [], 0
    while len(rows) < MAX_STEPS:
        for start in range(0, num_samples, BATCH):
            rows.append((len(rows) + 1, epoch, start, min(start + BATCH, num_samples), None))
        epoch += 1
    return rows[:MAX_STEPS]


def saved_steps(run_dir: Path) -> list[int]:
    folder = run_dir / "checkpoints"
    names = [path.name for path in folder.glob("step_*")] if folder.is_dir() else []
    return sorted(int(name.removeprefix("step_")) for name in names if name[5:].isdigit())


def records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [json.loads(line) for line in lines if line.endswith("}")]


def test_lost_node_shrinks_the_job_and_the_run_completes(tmp_path):
    from scaletrain.config import load_config
    from scaletrain.data.build import build_data

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    run_dir, endpoint = tmp_path / "elastic", f"127.0.0.1:{free_port()}"
    logs = [tmp_path / "node0.log", tmp_path / "node1.log"]
    nodes = [
        start_node(config, tmp_path, logs[rank], node_rank=rank, endpoint=endpoint)
        for rank in (0, 1)
    ]
    try:
        # wait for the first committed checkpoint (step_N.tmp is renamed when complete)
        deadline = time.monotonic() + 60
        while not saved_steps(run_dir) and nodes[0].poll() is None:
            assert time.monotonic() < deadline, logs[0].read_text()
            time.sleep(0.05)
        assert nodes[0].poll() is None, logs[0].read_text()
        plan_before = json.loads((run_dir / "plan.json").read_text())
        victims = [nodes[1].pid, *descendants(nodes[1].pid)]  # agent and worker
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        trained = expand_ledger(read_ledger(run_dir / LEDGER))  # as the kill left it
        nodes[1].wait()
        assert len(victims) >= 2 and nodes[1].returncode == -signal.SIGKILL
        assert nodes[0].wait(timeout=60) == 0, logs[0].read_text()
    finally:
        for node in nodes:
            if node.poll() is None:
                kill_tree(node.pid)
                node.wait()

    output = logs[0].read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == MAX_STEPS, summary
    # both nodes trained together first; node 0 finished alone after the restart
    assert plan_before["world_size"] == 2, plan_before
    assert summary["world_size"] == 1 and summary["counters"]["restarts"] >= 1, summary
    resumes = [r["step"] for r in records(run_dir) if r.get("event") == "resume"]
    assert len(resumes) >= 1, output
    # resumed from a checkpoint taken before the kill, at most one interval behind it
    killed_after = max(row[0] for row in trained)
    assert resumes[0] % EVERY == 0 and EVERY <= resumes[0] <= killed_after, (resumes, trained)
    assert killed_after - resumes[0] <= EVERY, (resumes, killed_after)
    assert killed_after < MAX_STEPS  # the kill came mid-run, not after the end
    # every planned step, once, on exactly the planned global samples: none dropped or doubled
    cfg = load_config(config)
    num_samples = len(build_data(cfg.data, seed=cfg.run.seed).train)
    ledger = expand_ledger(read_ledger(run_dir / LEDGER))
    assert ledger == planned_rows(num_samples)
    assert [row[0] for row in ledger] == list(range(1, MAX_STEPS + 1))
