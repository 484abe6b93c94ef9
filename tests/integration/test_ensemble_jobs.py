"""Members that are multi-process jobs (`ensemble.member_nproc: 2`): each equals the same
member trained as a plain `scaletrain train --nproc 2` run, `--nproc 4` trains both at once,
and a resumed finished ensemble starts no job."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from distributed_helpers import child_env, kill_tree, load_weights

import scaletrain

pytestmark = pytest.mark.slow

BASE = {
    "run": {"seed": 3},
    "data": {"source": "builtin", "name": "digits"},
    "model": {"name": "mlp", "hidden": [16]},
    "optim": {"name": "adamw", "lr": 0.01},
    "train": {"max_steps": 3, "batch_size": 32, "precision": "bf16-mixed", "num_threads": 1},
    "parallel": {"strategy": "ddp"},
    "checkpoint": {"every_epochs": 0, "save_best": False},
    "log": {"progress": False, "tensorboard": False, "report": False},
}
STRATEGIES = ("ddp", "fsdp")  # member 0's, member 1's (a member override)


def _start(tmp_path: Path, name: str, config: dict, *args: str) -> subprocess.Popen:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**config, "run": {**config["run"], "name": name}}))
    command = [sys.executable, "-m", "scaletrain", "train", str(path), "--out", str(tmp_path)]
    return subprocess.Popen(
        [*command, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=child_env(),
    )  # fmt: skip


def _wait(process: subprocess.Popen) -> str:
    try:
        output = process.communicate(timeout=400)[0]
    finally:
        if process.poll() is None:
            kill_tree(process.pid)
    assert process.returncode == 0, output
    return output


def test_member_jobs_equal_plain_multi_process_runs_and_run_at_once(tmp_path):
    ensemble = {
        **BASE,
        "ensemble": {
            "method": "voting",
            "members": 2,
            "member_nproc": 2,
            "member_overrides": [[], ["parallel.strategy=fsdp"]],
        },
    }
    started = [_start(tmp_path, "ens", ensemble, "--nproc", "4")]
    for index, strategy in enumerate(STRATEGIES):  # member i: seed + i, the ensemble's split
        plain = {
            **BASE,
            "run": {"seed": 3 + index},
            "data": {**BASE["data"], "split_seed": 3},
            "parallel": {"strategy": strategy},
        }
        started.append(_start(tmp_path, f"plain{index}", plain, "--nproc", "2"))
    for process in started:  # all three at once: the machine's idle moments are shared
        _wait(process)

    root = tmp_path / "ens"
    for index, strategy in enumerate(STRATEGIES):
        member, plain = root / "members" / f"m{index}", tmp_path / f"plain{index}"
        summaries = [json.loads((run / "summary.json").read_text()) for run in (member, plain)]
        assert summaries[0]["world_size"] == 2 and summaries[0]["memory"]["strategy"].startswith(
            strategy
        )
        assert summaries[0]["metrics"] == summaries[1]["metrics"], index
        first, second = load_weights(member), load_weights(plain)
        assert first.keys() == second.keys()
        assert all(torch.equal(first[key], second[key]) for key in first), index
    # both jobs ran at once: each started (its job config written) before the other ended
    jobs, members = root / "jobs", root / "members"
    for index, other in ((0, 1), (1, 0)):
        start = (jobs / f"m{index}.yaml").stat().st_mtime
        assert start < (members / f"m{other}" / "summary.json").stat().st_mtime
    summary = json.loads((root / "summary.json").read_text())
    assert (summary["nproc"], summary["member_nproc"]) == (4, 2)
    assert [run["action"] for run in summary["member_runs"]] == ["trained", "trained"]

    logs = {path: path.stat().st_size for path in jobs.glob("*.log")}
    resumed = scaletrain.resume(root, nproc=4)  # finished members: kept, no job started
    again = json.loads((root / "summary.json").read_text())
    assert [run["action"] for run in again["member_runs"]] == ["kept", "kept"]
    assert {path: path.stat().st_size for path in jobs.glob("*.log")} == logs
    assert resumed.metrics == summary["ensemble"]
