"""Distillation across 2 gloo ranks: the teacher replicated on each rank (live, or its logits
precomputed with each rank writing its own rows) gives the weights of one process, under
DDP and FSDP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from distributed_helpers import load_weights, train_variants

import scaletrain

pytestmark = pytest.mark.slow

LOG = {"progress": False, "tensorboard": False, "report": False, "every_steps": 5}
DATA = {"source": "builtin", "name": "digits", "layout": "flat", "split_seed": 0}


def _config(teacher_dir) -> dict:
    return {
        "run": {"seed": 2},
        "data": DATA,
        "model": {"name": "mlp", "hidden": [16]},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "train": {"max_steps": 10, "batch_size": 32, "precision": "32", "device": "cpu"},
        "checkpoint": {"every_epochs": 0, "save_best": False},
        "log": LOG,
        "distill": {"teacher": str(teacher_dir), "temperature": 2.0, "alpha": 0.8},
    }


def test_two_ranks_match_one_process(tmp_path):
    teacher_config = {
        "run": {"name": "teacher", "seed": 0, "out_dir": str(tmp_path)},
        "data": DATA,
        "model": {"name": "mlp", "hidden": [64]},
        "train": {"max_steps": 20, "batch_size": 64, "precision": "32"},
        "checkpoint": {"every_epochs": 0, "save_best": False},
        "log": LOG,
    }
    teacher = scaletrain.train(teacher_config)
    config = _config(teacher.run_dir)
    timeout = "parallel.timeout_s=60"
    train_variants(
        tmp_path,
        config,
        [
            f"ddp=parallel.strategy=ddp,{timeout}",
            f"ddp_pre=parallel.strategy=ddp,distill.precompute=true,{timeout}",
            f"fsdp=parallel.strategy=fsdp,{timeout}",
        ],
    )
    scaletrain.train({**config, "run": {"seed": 2, "name": "single", "out_dir": str(tmp_path)}})
    reference = load_weights(tmp_path / "single")
    for name in ("ddp", "ddp_pre", "fsdp"):
        candidate = load_weights(tmp_path / name)
        for key in reference:
            torch.testing.assert_close(
                candidate[key], reference[key], rtol=1e-4, atol=1e-5, msg=f"{name}: {key}"
            )
    # both ranks' rows of the precomputed file hold the teacher's logits
    logits = np.load(tmp_path / "ddp_pre" / "teacher_logits.npy")
    assert np.isfinite(logits).all() and (np.abs(logits).sum(axis=1) > 0).all()
    assert not (tmp_path / "ddp_pre" / "teacher_logits.npy.partial").exists()
