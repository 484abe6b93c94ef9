"""Launch real torchrun jobs from tests: free ports, bounded time, no orphans."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

WORKERS = Path(__file__).parent / "workers"
SRC = Path(__file__).parents[2] / "src"


@dataclass
class Finished:
    returncode: int
    output: str


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    """The test's environment, one thread per worker (2 cores), src importable."""
    path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, **extra}
    env.pop("TORCHELASTIC_RUN_ID", None)
    return env


def start_cli(*args: str) -> subprocess.Popen:
    """`python -m scaletrain ARGS` as a child (stdout and stderr merged, text) to signal."""
    return subprocess.Popen(
        [sys.executable, "-m", "scaletrain", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env(),
    )


def torchrun(args: list[str], *, nproc: int = 2, timeout: float = 120, **env: str) -> Finished:
    """`python -m torch.distributed.run` on a free local port; kills the job on timeout."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{free_port()}",
        "--max-restarts",
        "0",
        *args,
    ]
    return run(command, timeout=timeout, env=child_env(**env))


def run(command: list[str], *, timeout: float, env: dict[str, str] | None = None) -> Finished:
    """Run with output captured; on timeout stop the whole process tree, then fail."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env or child_env(),
    )
    return wait_finished(process, timeout=timeout, what=" ".join(command))


def wait_finished(process: subprocess.Popen, *, timeout: float, what: str = "") -> Finished:
    """Its output once it exits; on timeout stop the whole process tree, then fail."""
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(process.pid)
        output, _ = process.communicate()
        raise AssertionError(f"timed out after {timeout}s: {what}\n{output}") from None
    return Finished(process.returncode, output)


def train_variants(out: Path, config: dict, specs: list[str], *, timeout: float = 240) -> str:
    """One 2-rank torchrun job training `config` once per `NAME=KEY=VALUE,...` spec into
    `out/NAME` (workers/train_variants.py); its output; fails the test if the job fails."""
    finished = torchrun(
        [str(WORKERS / "train_variants.py"), str(out), json.dumps(config), *specs],
        timeout=timeout,
    )
    assert finished.returncode == 0, finished.output
    return finished.output


def _is_resource_tracker(pid: int) -> bool:
    """multiprocessing's resource tracker: started once by any `spawn` in this process (the
    ensemble's in-process `nproc` runs) and kept until it exits; not a worker left behind."""
    try:
        command = (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False
    return b"multiprocessing.resource_tracker" in command


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (torchrun puts workers in their own sessions), but
    for multiprocessing's resource tracker."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return [child for child in found if not _is_resource_tracker(child)]


def kill_tree(pid: int) -> None:
    """SIGTERM the agent (it stops its workers), then SIGKILL whatever is left."""
    tree = [pid, *descendants(pid)]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    time.sleep(3)
    for each in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)


def alive(pids: list[int]) -> list[int]:
    """Those of `pids` still running (zombies count as gone)."""
    running = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.append(pid)
    return running


def load_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The final checkpoint as one unsharded state dict (DCP reshards any strategy)."""
    from scaletrain import api

    model = api.load_run(run_dir, checkpoint="last").model
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
