"""async_ps over `--nnodes 2`: each node's CLI runs its processes under our own supervisor
(global ranks offset by the node rank, the RPC rendezvous at --rdzv-endpoint), so a worker
killed on either node does not stop the job, as it would under torchrun's agent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from distributed_helpers import child_env, free_port, kill_tree, wait_finished
from test_async_ps import CONFIG, wait_for_step, write_config

pytestmark = pytest.mark.slow


def start_node(config: Path, out: Path, *, node_rank: int, endpoint: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "scaletrain", "train", str(config), "--out", str(out)]
    command += ["--nproc", "2", "--nnodes", "2", "--node-rank", str(node_rank)]
    command += ["--rdzv-endpoint", endpoint, "parallel.strategy=async_ps"]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env()
    )


def test_a_worker_killed_on_the_second_node_does_not_stop_the_job(tmp_path):
    train = {**CONFIG["train"], "max_steps": 150, "batch_size": 48}  # 3 workers
    config = write_config(tmp_path, train=train, model={"name": "mlp", "hidden": [256, 256]})
    out, endpoint = tmp_path / "async", f"127.0.0.1:{free_port()}"
    # node 0: workers 0 and 1; node 1: worker 2 and the server (global ranks 2, 3)
    nodes = [start_node(config, out, node_rank=rank, endpoint=endpoint) for rank in (0, 1)]
    try:
        victim = wait_for_step(out / "ps", rank=2, step=5, timeout=120)["pid"]
        os.kill(victim, signal.SIGKILL)
        finished = [wait_finished(node, timeout=120) for node in nodes]
    except BaseException:
        for node in nodes:
            kill_tree(node.pid)
        raise
    assert [f.returncode for f in finished] == [0, 0], [f.output for f in finished]
    assert f"worker rank 2 (pid {victim}) exited with code -9" in finished[1].output
    run_dir = out / "ps"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 150
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    (lost,) = [r for r in records if r.get("event") == "worker_lost"]
    assert "worker rank 2 died" in lost["detail"]
    (ps,) = [r["ps"] for r in records if "ps" in r]
    assert ps["workers"]["0"]["pushes"] == ps["workers"]["1"]["pushes"] == 150
    assert 5 <= ps["workers"]["2"]["pushes"] < 150
