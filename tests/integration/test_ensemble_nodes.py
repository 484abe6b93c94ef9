"""An ensemble on two nodes (two launchers on this machine, a shared directory): each node
trains its members, node 0 combines them, and the members equal a one-machine ensemble's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
from distributed_helpers import child_env, free_port, kill_tree, load_weights

import scaletrain

pytestmark = pytest.mark.slow

CONFIG = {
    "run": {"name": "ens", "seed": 5},
    "data": {"source": "builtin", "name": "digits"},
    "model": {"name": "mlp", "hidden": [16]},
    "optim": {"name": "adamw", "lr": 0.01},
    "train": {"max_steps": 3, "batch_size": 32, "precision": "bf16-mixed", "num_threads": 1},
    "checkpoint": {"every_epochs": 0, "save_best": False},
    "log": {"progress": False, "tensorboard": False, "report": False},
    "ensemble": {"method": "voting", "members": 2},
}


def test_two_nodes_train_their_members_and_node_zero_combines(tmp_path):
    path = tmp_path / "ens.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scaletrain",
                "train",
                str(path),
                "--out",
                str(tmp_path / "shared"),
                "--nnodes",
                "2",
                "--node-rank",
                str(rank),
                "--rdzv-endpoint",
                endpoint,
                "--rdzv-timeout",
                "120",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=child_env(),
        )  # fmt: skip
        for rank in (1, 0)  # node 1 first: it waits for node 0's board
    ]
    outputs = []
    try:
        outputs = [node.communicate(timeout=300)[0] for node in nodes]
    finally:
        for node in nodes:
            kill_tree(node.pid) if node.poll() is None else None
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert "node 1: members m1 done" in outputs[0]
    root = tmp_path / "shared" / "ens"
    summary = json.loads((root / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert [(run["index"], run["node"]) for run in summary["member_runs"]] == [(0, 0), (1, 1)]

    alone = scaletrain.train({**CONFIG, "run": {**CONFIG["run"], "out_dir": str(tmp_path)}})
    assert alone.metrics == summary["ensemble"]
    for index in (0, 1):
        first = load_weights(root / "members" / f"m{index}")
        second = load_weights(alone.run_dir / "members" / f"m{index}")
        assert all(torch.equal(first[key], second[key]) for key in first), index
