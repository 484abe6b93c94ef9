"""`scaletrain train --nproc 2` and plain torchrun; launch errors are clear and leave no orphans."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from distributed_helpers import alive, child_env, descendants, free_port, kill_tree, run

from scaletrain.launch import LaunchError, LaunchOptions, launch, torchrun_args

pytestmark = pytest.mark.slow

CONFIG = {
    "run": {"name": "launched", "seed": 0},
    "data": {"source": "builtin", "name": "digits"},
    "model": {"name": "mlp", "hidden": [16]},
    "train": {"max_steps": 3, "batch_size": 32, "precision": "32", "device": "cpu"},
    "checkpoint": {"every_epochs": 0, "save_best": False},
    "log": {"progress": False, "tensorboard": False, "report": False},
}


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


def scaletrain(*args: str, timeout: float = 120) -> tuple[int, str]:
    finished = run([sys.executable, "-m", "scaletrain", *args], timeout=timeout, env=child_env())
    return finished.returncode, finished.output


def workers_of(marker: str) -> list[int]:
    """Live processes whose command line mentions `marker` (a test's own tmp path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return alive(found)


def test_nproc_2_runs_two_ranks_and_prints_once(config_file, tmp_path):
    code, output = scaletrain(
        "train",
        str(config_file),
        "--nproc",
        "2",
        "--out",
        str(tmp_path),
        "train.micro_batch_size=8",
        "log.tensorboard=true",
    )
    assert code == 0, output
    run_dir = tmp_path / "launched"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "finished"
    assert output.count("run directory:") == 1  # rank 0 only
    assert output.count("Results") == 1
    plan = json.loads((run_dir / "plan.json").read_text())
    expected = {"global_batch_size": 32, "micro_batch_size": 8, "grad_accum_steps": 2}
    assert {key: plan[key] for key in expected} == expected and plan["world_size"] == 2
    # events.out.tfevents.<time>.<host>.<pid>.<n>: every TensorBoard file from one process
    events = list((run_dir / "tb").rglob("events.out.tfevents.*"))
    assert events and len({path.name.split(".")[-2] for path in events}) == 1
    # the planner's estimate at the start and next to the measured peak at the end, once
    memory = [line for line in output.splitlines() if line.startswith("memory per rank (")]
    assert len(memory) == 2 and ", measured peak " in memory[1], memory
    assert summary["memory"]["estimate_mb"] > 0 and summary["memory"]["measured_peak_mb"] > 0


def test_ctrl_c_stops_every_worker_and_exits_130(config_file, tmp_path):
    command = [sys.executable, "-m", "scaletrain", "train", str(config_file), "--nproc", "2"]
    command += ["--out", str(tmp_path), "train.max_steps=1000000", "log.every_steps=1"]
    launcher = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env()
    )
    try:
        metrics = tmp_path / "launched" / "metrics.jsonl"
        deadline = time.monotonic() + 90
        while not (metrics.is_file() and '"train"' in metrics.read_text()):
            assert launcher.poll() is None and time.monotonic() < deadline, "training never began"
            time.sleep(0.5)
        workers = descendants(launcher.pid)
        assert len(workers) >= 2
        launcher.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends the launcher
        output, _ = launcher.communicate(timeout=90)
    finally:
        if launcher.poll() is None:
            kill_tree(launcher.pid)
    assert launcher.returncode == 130, output
    assert "interrupted" in output
    assert not alive(workers), output
    summary = json.loads((tmp_path / "launched" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["world_size"] == 2


def test_plain_torchrun_module_works(config_file, tmp_path):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{free_port()}",
        "-m",
        "scaletrain",
        "train",
        str(config_file),
        "--out",
        str(tmp_path),
        "parallel.strategy=fsdp",
    ]
    finished = run(command, timeout=120)
    assert finished.returncode == 0, finished.output
    summary = json.loads((tmp_path / "launched" / "summary.json").read_text())
    assert summary["world_size"] == 2


def test_readme_headline_trains_the_default_config_under_fsdp_in_bf16(tmp_path):
    """The README's `--nproc 2 parallel.strategy=fsdp` on the default CNN (batch norm) in
    bf16-mixed: FSDP x batch norm x bf16 once failed here (issue #12)."""
    default = Path(__file__).parents[2] / "configs" / "default.yaml"
    code, output = scaletrain(
        "train",
        str(default),
        "--nproc",
        "2",
        "parallel.strategy=fsdp",
        "train.precision=bf16-mixed",
        "train.max_epochs=1",
        f"run.out_dir={tmp_path}",
        timeout=180,
    )
    assert code == 0, output
    summary = json.loads((tmp_path / "digits-cnn" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["world_size"] == 2, summary
    assert summary["precision"] == "bf16-mixed"
    assert 0 < summary["metrics"]["val"]["accuracy"] <= 1, summary["metrics"]


def test_port_in_use_is_named():
    # in this process: the check runs before any worker exists
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        options = LaunchOptions(nproc=2, rdzv_endpoint=f"127.0.0.1:{port}")
        with pytest.raises(LaunchError, match=f"port {port} is already in use"):
            launch(options, ["train", "unused.yaml"])


def test_rendezvous_that_never_completes_times_out():
    # node 0 of 2 waits for a node 1 that never comes; the agent gives up after 3 s
    options = LaunchOptions(
        nproc=1, nnodes=2, rdzv_endpoint=f"127.0.0.1:{free_port()}", rdzv_timeout_s=3
    )
    started = time.monotonic()
    with pytest.raises(LaunchError, match="did not complete within 3 s: not all 2 nodes joined"):
        launch(options, ["train", "unused.yaml"])
    assert time.monotonic() - started < 30
    assert not descendants(os.getpid())  # no worker was ever started, none is left


def test_worker_failing_at_start_stops_the_job(config_file, tmp_path):
    # 33 is not divisible by 2 ranks: every worker raises ConfigError while planning
    code, output = scaletrain(
        "train",
        str(config_file),
        "--nproc",
        "2",
        "--out",
        str(tmp_path),
        "train.batch_size=33",
        timeout=90,
    )
    assert code == 2, output
    assert "worker rank" in output and "train.batch_size" in output
    assert not workers_of(str(tmp_path))


def test_torchrun_arguments():
    options = LaunchOptions(
        nproc=4,
        nnodes=2,
        node_rank=1,
        rdzv_endpoint="10.0.0.1:29400",
        max_restarts=3,
        rdzv_timeout_s=30,
    )
    args = torchrun_args(options, ["train", "c.yaml"])
    assert args[args.index("--nproc-per-node") + 1] == "4"
    assert args[args.index("--nnodes") + 1] == "2"
    assert args[args.index("--max-restarts") + 1] == "3"
    assert args[args.index("--rdzv-backend") + 1] == "c10d"
    assert "join_timeout=30,is_host=0" in args
    assert args[-3:] == ["scaletrain", "train", "c.yaml"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (LaunchOptions(nproc=1, nnodes=2), "--rdzv-endpoint"),
        (LaunchOptions(nproc=1, nnodes=2, node_rank=2, rdzv_endpoint="h:1"), "--node-rank"),
        (LaunchOptions(nproc=0), "--nproc"),
    ],
)
def test_bad_launch_options_are_named(options, message):
    with pytest.raises(LaunchError, match=message):
        torchrun_args(options, ["train", "c.yaml"])
