"""Launch real torchrun jobs from tests: free ports, bounded time, no orphans."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
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
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC), **extra}
    env.pop("TORCHELASTIC_RUN_ID", None)
    return env


def torchrun(args: list[str], *, nproc: int = 2, timeout: float = 120, **env: str) -> Finished:
    """`python -m torch.distributed.run --standalone` with `args`; kills the job on timeout."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
        "--max-restarts", "0", *args,
    ]
    return run(command, timeout=timeout, env=child_env(**env))


def run(command: list[str], *, timeout: float, env: dict[str, str] | None = None) -> Finished:
    """Run in its own session so a timeout can kill every descendant."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env or child_env(), start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise AssertionError(f"timed out after {timeout}s: {' '.join(command)}\n{output}") from None
    return Finished(process.returncode, output)


def load_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The final checkpoint as one unsharded state dict (DCP reshards any strategy)."""
    from scaletrain import api

    model = api.load_run(run_dir, checkpoint="last").model
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
