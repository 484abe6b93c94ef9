"""A last step with fewer samples than ranks: the rank left without one still trains along.

With `train.batch_size` equal to the world size and an odd train split, the epoch's last
step holds one sample for two ranks. The empty rank must join the gradient collectives
(a zero-gradient backward) instead of stalling them, and the math must stay that of one
process: the step's mean loss over its one sample.
"""

from __future__ import annotations

import json

import pytest
import torch
from distributed_helpers import load_weights, train_variants

from scaletrain import api
from scaletrain.config import DataConfig
from scaletrain.data import build_data

pytestmark = pytest.mark.slow

DATA = {"source": "builtin", "name": "digits", "val_fraction": 0.9, "test_fraction": 0.05}
CONFIG = {
    "run": {"seed": 3},
    "data": DATA,
    "model": {"name": "mlp", "hidden": [16]},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "train": {"max_epochs": 1, "batch_size": 2, "precision": "32", "device": "cpu"},
    "checkpoint": {"every_epochs": 0, "save_best": False},
    "log": {"progress": False, "tensorboard": False, "report": False, "every_steps": 5},
}


def test_rank_without_a_sample_in_the_last_step_joins_the_step(tmp_path):
    num_train = len(build_data(DataConfig(**DATA), seed=3).train)
    assert num_train % 2 == 1  # the last step of each epoch has one sample for two ranks
    train_variants(
        tmp_path, CONFIG, ["ddp=parallel.strategy=ddp,parallel.timeout_s=60"], timeout=120
    )
    single = api.train({**CONFIG, "run": {"seed": 3, "name": "single", "out_dir": str(tmp_path)}})
    summaries = {
        name: json.loads((tmp_path / name / "summary.json").read_text())
        for name in ("ddp", "single")
    }
    steps = (num_train + 1) // 2
    assert summaries["ddp"]["steps"] == summaries["single"]["steps"] == steps
    reference, candidate = load_weights(tmp_path / "single"), load_weights(tmp_path / "ddp")
    for key in reference:
        torch.testing.assert_close(candidate[key], reference[key], rtol=1e-4, atol=1e-5, msg=key)
    assert single.status == "finished"
