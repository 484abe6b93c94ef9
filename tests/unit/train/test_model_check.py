"""A user module that does not fit the data is one line before training, and no run dir."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import scaletrain
from scaletrain.config import load_config
from scaletrain.data import build_data
from scaletrain.errors import UserError
from scaletrain.models import build_model
from scaletrain.train.model_check import check_model_fits


def _cfg(tmp_path, **data):
    return {
        "run": {"name": "mismatch", "out_dir": str(tmp_path)},
        "data": data,
        "train": {"max_epochs": 1, "batch_size": 16, "precision": "32"},
        "log": {"progress": False, "tensorboard": False, "report": False},
    }


def _three_classes():
    inputs = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    return inputs, np.arange(60) % 3


def _refused(tmp_path, model, data, **cfg_data) -> str:
    with pytest.raises(UserError) as caught:
        scaletrain.train(_cfg(tmp_path, **cfg_data), model=model, data=data)
    message = str(caught.value)
    assert "\n" not in message
    assert not (tmp_path / "mismatch").exists(), "a refused model left a run directory"
    return message


def test_input_size_mismatch_names_input_shape_and_classes(tmp_path):
    message = _refused(tmp_path, nn.Linear(5, 3), {"train": _three_classes()})
    assert "inputs of shape (N, 4)" in message
    assert "3 classes" in message
    assert "returning (N, 3)" in message


@pytest.mark.parametrize("num_logits", [2, 1])
def test_too_few_logits_for_the_classes(tmp_path, num_logits):
    message = _refused(tmp_path, nn.Linear(4, num_logits), {"train": _three_classes()})
    assert f"returns shape (1, {num_logits})" in message
    assert "(N, 3)" in message and "3 classes" in message


def test_flat_model_on_images_names_the_image_shape(tmp_path):
    images = np.random.default_rng(0).normal(size=(60, 1, 8, 8)).astype(np.float32)
    model = nn.Sequential(nn.Linear(64, 3))  # forgot to flatten
    message = _refused(tmp_path, model, {"train": (images, np.arange(60) % 3)})
    assert "inputs of shape (N, 1, 8, 8)" in message and "3 classes" in message


def test_regression_output_width_must_match_targets(tmp_path):
    inputs = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    targets = np.random.default_rng(1).normal(size=(60, 2)).astype(np.float32)
    message = _refused(tmp_path, nn.Linear(4, 3), {"train": (inputs, targets)}, task="regression")
    assert "returning (N, 2)" in message and "2 targets" in message


def test_user_dataset_mismatch_is_refused_too(tmp_path):
    inputs, targets = torch.randn(40, 4), torch.arange(40) % 3
    message = _refused(tmp_path, nn.Linear(6, 3), {"train": TensorDataset(inputs, targets)})
    assert "inputs of shape (N, 4)" in message and "3 classes" in message


def test_batch_norm_model_checked_in_eval_mode_and_mode_restored(tmp_path):
    """One sample through BatchNorm1d fails in train mode; the check uses eval mode, leaves
    the running statistics untouched and puts the module back in train mode."""
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    cfg = load_config(_cfg(tmp_path))
    bundle = build_data(cfg.data, seed=0, user_data={"train": _three_classes()})
    before = model[1].running_mean.clone()
    check_model_fits(model, bundle)
    assert model.training and torch.equal(model[1].running_mean, before)


def test_binary_single_logit_accepted_with_bce(tmp_path):
    inputs = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    cfg = load_config(_cfg(tmp_path))
    bundle = build_data(cfg.data, seed=0, user_data={"train": (inputs, np.arange(60) % 2)})
    check_model_fits(nn.Linear(4, 1), bundle, loss_name="bce_with_logits")
    with pytest.raises(UserError, match="2 classes"):
        check_model_fits(nn.Linear(4, 1), bundle, loss_name="cross_entropy")


@pytest.mark.parametrize(
    "overrides", [["model.name=mlp"], ["model.name=cnn"], ["model.name=mlp", "data.name=diabetes"]]
)
def test_registry_models_pass(tmp_path, overrides):
    cfg = load_config(_cfg(tmp_path), overrides)
    bundle = build_data(cfg.data, seed=0)
    spec = bundle.spec
    model = build_model(cfg.model, input_shape=spec.input_shape, num_outputs=spec.num_outputs)
    check_model_fits(model, bundle, loss_name=cfg.loss.name)
