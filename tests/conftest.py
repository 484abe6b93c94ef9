"""Shared fixtures; an autouse guard fails tests that leak env vars or process groups."""

from __future__ import annotations

import os
import signal

import pytest

# Set by pytest itself and by libraries on import (inductor, scikit-learn).
_IGNORED_ENV = {
    "PYTEST_CURRENT_TEST",
    "TORCHINDUCTOR_CACHE_DIR",
    "KMP_DUPLICATE_LIB_OK",  # scikit-learn sets these two on import
    "KMP_INIT_AT_FORK",
}


@pytest.fixture(autouse=True)
def _no_leaks():
    before = dict(os.environ)
    yield
    import torch.distributed as dist

    leaked_group = dist.is_available() and dist.is_initialized()
    if leaked_group:
        dist.destroy_process_group()
    changed = {
        k
        for k in set(before) | set(os.environ)
        if before.get(k) != os.environ.get(k) and k not in _IGNORED_ENV
    }
    os.environ.clear()
    os.environ.update(before)
    assert not leaked_group, "test left a torch.distributed process group initialized"
    assert not changed, f"test leaked environment variables: {sorted(changed)}"


@pytest.fixture
def tiny_config(tmp_path) -> dict:
    """A fast config on built-in digits (a few seconds of CPU)."""
    return {
        "run": {"name": "tiny", "seed": 0, "out_dir": str(tmp_path / "runs")},
        "data": {"source": "builtin", "name": "digits"},
        "model": {"name": "mlp", "hidden": [32]},
        "optim": {"name": "adamw", "lr": 0.01},
        "train": {"max_epochs": 2, "batch_size": 64, "precision": "32"},
        "log": {"progress": False, "tensorboard": False, "report": False},
    }


class InterruptAt:
    """Callback: sends this process a real SIGINT (Ctrl-C) during a given optimizer step."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, state):
        if state.step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture
def interrupt_at() -> type[InterruptAt]:
    """`interrupt_at(step)`: a callback that interrupts training like Ctrl-C at `step`."""
    return InterruptAt
