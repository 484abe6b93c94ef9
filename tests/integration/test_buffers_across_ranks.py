"""2 gloo processes, DDP and FSDP, a model with BatchNorm: after every step each rank holds
the same buffers, and the checkpoint holds exactly them.

Each rank's forwards update its running statistics from its own samples. Unsynced, the
ranks evaluated val/test with different statistics and DCP checkpointed whichever rank's
copy it chose, so a run restarted from that checkpoint evaluated differently from the
uninterrupted run (test_fault_elastic.py checks that end to end)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from distributed_helpers import WORKERS, torchrun
from safetensors.torch import load_file

from scaletrain import api

pytestmark = pytest.mark.slow

MAX_STEPS = 6
CONFIG = {
    "run": {"seed": 5},
    "data": {"source": "builtin", "name": "digits", "layout": "flat"},
    "model": {"name": "mlp", "hidden": [16], "batch_norm": True},
    "optim": {"name": "adamw", "lr": 0.01},
    "train": {"max_steps": MAX_STEPS, "batch_size": 32, "precision": "32", "device": "cpu"},
    "checkpoint": {"every_steps": 4, "every_epochs": 0, "save_best": False},
    "log": {"every_steps": 1, "progress": False, "tensorboard": False, "report": False},
    "parallel": {"timeout_s": 30},
}
STRATEGIES = ["ddp", "fsdp"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("buffers")
    finished = torchrun(
        [str(WORKERS / "train_buffers.py"), str(out), json.dumps(CONFIG)], timeout=240
    )
    assert finished.returncode == 0, finished.output
    return out


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_rank_holds_the_same_buffers_after_every_step(trained, strategy):
    ranks = [load_file(trained / f"{strategy}.rank{rank}.safetensors") for rank in (0, 1)]
    assert sorted(ranks[0]) == sorted(ranks[1])
    steps = {int(key.partition("/")[0]) for key in ranks[0]}
    assert steps == set(range(1, MAX_STEPS + 1))
    assert any(key.endswith("running_mean") for key in ranks[0])  # the model has BatchNorm
    for key, value in ranks[0].items():
        assert torch.equal(value, ranks[1][key]), key
    # the statistics really move: the last step's are not the initial ones
    mean = next(key for key in ranks[0] if key.startswith(f"{MAX_STEPS}/") and "mean" in key)
    assert ranks[0][mean].abs().sum() > 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_checkpoint_holds_the_buffers_every_rank_evaluates_with(trained, strategy, tmp_path):
    final = load_file(trained / f"{strategy}.rank0.safetensors")
    exported = load_file(api.export(trained / strategy, out=tmp_path / "w.st", checkpoint="last"))
    buffers = {key.partition("/")[2]: value for key, value in final.items()}
    buffers = {name: final[f"{MAX_STEPS}/{name}"] for name in buffers}
    assert set(buffers) <= set(exported), (sorted(buffers), sorted(exported))
    for name, value in buffers.items():
        assert torch.equal(exported[name], value), name
