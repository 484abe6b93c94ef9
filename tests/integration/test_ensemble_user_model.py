"""An ensemble of the user's own module on in-memory data, through the Python API: a factory
gives each member a fresh module, every member trains on the arrays given, and the combined
run predicts as its members say."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from torch import nn

import scaletrain
from scaletrain.ensemble.boosting import samme_predict
from scaletrain.errors import UserError


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(30, 8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, inputs):
        return self.layers(inputs)


def _config(tmp_path, name: str, **ensemble) -> dict:
    return {
        "run": {"name": name, "seed": 0, "out_dir": str(tmp_path)},
        "optim": {"name": "adamw", "lr": 0.01},
        "train": {"max_epochs": 2, "batch_size": 64, "precision": "32", "num_threads": 1},
        "log": {"progress": False, "tensorboard": False, "report": False},
        "ensemble": {"members": 2, **ensemble},
    }


def _data():
    inputs, targets = load_breast_cancer(return_X_y=True)
    return {"train": (inputs.astype(np.float32), targets)}


@pytest.mark.slow
def test_boosting_a_user_module_on_user_arrays(tmp_path):
    run = scaletrain.train(
        _config(tmp_path, "user", method="boosting"), model=TinyNet, data=_data()
    )
    members = list(run.model.members)
    assert all(isinstance(member, TinyNet) for member in members)
    assert not torch.equal(members[0].layers[0].weight, members[1].layers[0].weight)
    assert run.config.model.name == "user" and run.config.data.source == "tensors"
    inputs = torch.randn(64, 30)
    with torch.no_grad():
        labels = np.stack([member(inputs).argmax(1).numpy() for member in members])
        combined = run.model(inputs).argmax(1).numpy()
    alphas = run.model.weights.numpy()  # normalized alphas: the same argmax
    assert np.array_equal(combined, samme_predict(labels, alphas, num_classes=2))
    reloaded = scaletrain.load_run(run.run_dir, model=TinyNet)  # the factory again
    with torch.no_grad():
        assert torch.equal(reloaded.model(inputs), run.model(inputs))
    with pytest.raises(UserError, match="pass a factory"):
        scaletrain.load_run(run.run_dir, model=TinyNet())


def test_an_instance_or_worker_processes_are_refused_before_any_file(tmp_path):
    with pytest.raises(UserError, match="pass a factory that returns a fresh one"):
        scaletrain.train(_config(tmp_path, "inst"), model=TinyNet(), data=_data())
    with pytest.raises(UserError, match="nproc: 2 worker processes cannot receive"):
        scaletrain.train(_config(tmp_path, "procs"), model=TinyNet, data=_data(), nproc=2)
    shared = TinyNet()
    with pytest.raises(UserError, match="returned the same TinyNet twice"):
        scaletrain.train(_config(tmp_path, "same"), model=lambda: shared, data=_data())
    assert not (tmp_path / "inst").exists() and not (tmp_path / "procs").exists()
