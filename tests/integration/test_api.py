"""The Python API with user modules and user data."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from torch.utils.data import TensorDataset

import scaletrain
from scaletrain.errors import UserError


def _cfg(tmp_path, **train):
    return {
        "run": {"name": "api", "out_dir": str(tmp_path)},
        "train": {"max_epochs": 15, "batch_size": 32, "precision": "32", **train},
        "log": {"progress": False, "tensorboard": False, "report": False},
    }


def test_user_module_on_arrays(tmp_path):
    X, y = load_breast_cancer(return_X_y=True)
    model = torch.nn.Sequential(torch.nn.Linear(30, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    run = scaletrain.train(_cfg(tmp_path), model=model, data={"train": (X, y)})
    assert run.model is model
    assert run.metrics["test"]["accuracy"] > 0.9
    saved = (run.run_dir / "config.yaml").read_text()
    assert "name: user" in saved and "class_name: Sequential" in saved


def test_user_datasets_for_every_split(tmp_path):
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(600, 5, generator=generator)
    targets = (inputs[:, 0] + inputs[:, 1] > 0).long()
    data = {
        "train": TensorDataset(inputs[:400], targets[:400]),
        "val": TensorDataset(inputs[400:500], targets[400:500]),
        "test": TensorDataset(inputs[500:], targets[500:]),
    }
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    run = scaletrain.train(_cfg(tmp_path, max_epochs=10), model=model, data=data)
    assert run.metrics["val"]["num_samples"] == 100
    assert run.metrics["test"]["accuracy"] > 0.85


def test_missing_train_split_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="train"):
        scaletrain.train(_cfg(tmp_path), data={"val": (np.zeros((4, 2)), np.zeros(4))})
    assert not (tmp_path / "api").exists()


def test_gradient_accumulation_matches_full_batch(tmp_path):
    """micro batch 8 x 4 accumulation == batch 32 in one pass (within fp32 rounding)."""
    base = {
        "data": {"source": "builtin", "name": "iris"},
        "model": {"name": "mlp", "hidden": [16]},
        "optim": {"name": "sgd", "lr": 0.1},
        "log": {"progress": False, "tensorboard": False, "report": False},
    }
    runs = []
    for name, micro in (("full", 32), ("accum", 8)):
        cfg = {
            **base,
            "run": {"name": name, "out_dir": str(tmp_path)},
            "train": {
                "max_steps": 12,
                "batch_size": 32,
                "micro_batch_size": micro,
                "precision": "32",
            },
        }
        runs.append(scaletrain.train(cfg).model.state_dict())
    for key in runs[0]:
        torch.testing.assert_close(runs[0][key], runs[1][key], rtol=1e-5, atol=1e-6)
