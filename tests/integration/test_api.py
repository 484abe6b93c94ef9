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


def test_textcnn_learns_a_generated_token_task(tmp_path):
    """Label = whether the 'keyword' token 7 occurs: TextCNN's max-pool should find it."""
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(8, 50, (900, 24), generator=generator)
    labels = torch.randint(0, 2, (900,), generator=generator)
    positions = torch.randint(0, 24, (900,), generator=generator)
    tokens[labels == 1, positions[labels == 1]] = 7
    data = {
        "train": TensorDataset(tokens[:600], labels[:600]),
        "val": TensorDataset(tokens[600:750], labels[600:750]),
        "test": TensorDataset(tokens[750:], labels[750:]),
    }
    cfg = _cfg(tmp_path, max_epochs=8)
    cfg["model"] = {"name": "textcnn", "vocab_size": 50, "embed_dim": 16, "num_filters": 16}
    cfg["optim"] = {"lr": 0.01}
    run = scaletrain.train(cfg, data=data)
    assert run.metrics["test"]["accuracy"] > 0.95
