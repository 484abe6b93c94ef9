"""Boosting end to end: SAMME with its weights in the loss, SAMME.R, and gradient boosting on
residuals, each checked against the members' own predictions on the train split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import scaletrain
from scaletrain.config import load_config
from scaletrain.data import build_data
from scaletrain.data.transforms.subsample import subsample_indices
from scaletrain.ensemble.boosting import samme_r_predict, samme_r_round, samme_round

pytestmark = pytest.mark.slow


def _config(out: Path, name: str, *, data: str = "digits", epochs: int = 2, **boosting) -> dict:
    return {
        "run": {"name": name, "seed": 0, "out_dir": str(out)},
        "data": {"source": "builtin", "name": data},
        "model": {"name": "mlp", "hidden": [16]},
        "optim": {"name": "adamw", "lr": 0.01},
        "train": {"max_epochs": epochs, "batch_size": 64, "precision": "32", "num_threads": 1},
        "log": {"progress": False, "tensorboard": False, "report": False},
        "ensemble": {"method": "boosting", "members": 2, "boosting": boosting},
    }


def _train_split(run):
    bundle = build_data(run.config.data, seed=0)
    return bundle, bundle.train.inputs, bundle.train.targets.long().numpy()


def _probabilities(member, inputs) -> np.ndarray:
    with torch.no_grad():
        return member(inputs).softmax(1).double().numpy()


def test_samme_feeds_its_weights_to_the_loss_of_every_train_row(tmp_path):
    run = scaletrain.train(_config(tmp_path, "samme"))
    record = json.loads((run.run_dir / "ensemble.json").read_text())
    assert record["combine"] == "boosted" and len(record["rounds"]) == 2
    bundle, inputs, labels = _train_split(run)
    weights = np.full(len(labels), 1 / len(labels))
    for index, member in enumerate(run.model.members):
        member_cfg = scaletrain.load_run(run.run_dir / "members" / f"m{index}").config
        assert member_cfg.data.subsample.weights_use == "loss"
        assert subsample_indices(len(labels), member_cfg.data.subsample).tolist() == list(
            range(len(labels))
        )  # every row once: no resampling
        stored = np.load(member_cfg.data.subsample.weights_file, allow_pickle=False)
        np.testing.assert_allclose(stored, weights, rtol=1e-12)
        correct = _probabilities(member, inputs).argmax(1) == labels
        expected = samme_round(weights, correct, num_classes=10)
        assert record["weights"][index] == pytest.approx(max(expected.alpha, 0.0))
        weights = expected.weights
    assert run.metrics["test"]["accuracy"] > 0.5


def test_loss_weights_steer_what_a_member_learns(tmp_path):
    """A round whose weights sit on class 0's rows only learns to answer class 0."""
    cfg = _config(tmp_path, "steer")
    bundle = build_data(load_config(cfg).data, seed=0)
    labels = bundle.train.targets.long().numpy()
    path = tmp_path / "weights.npy"
    np.save(path, (labels == 0).astype(np.float64), allow_pickle=False)
    cfg = {**cfg, "ensemble": None}
    cfg["data"] = {
        **cfg["data"],
        "split_seed": 0,
        "subsample": {"weights_file": str(path), "weights_use": "loss", "fraction": 1.0},
    }
    run = scaletrain.train(cfg)
    predicted = _probabilities(run.model, bundle.train.inputs).argmax(1)
    assert (predicted == 0).mean() > 0.95  # unweighted, class 0 is a tenth of the rows


def test_samme_r_weights_and_prediction_follow_the_members_probabilities(tmp_path):
    run = scaletrain.train(_config(tmp_path, "samme_r", algorithm="samme_r", weights="resample"))
    record = json.loads((run.run_dir / "ensemble.json").read_text())
    assert record["weights"] == [1.0, 1.0]
    bundle, inputs, labels = _train_split(run)
    member_probabilities = [_probabilities(member, inputs) for member in run.model.members]
    first = samme_r_round(np.full(len(labels), 1 / len(labels)), member_probabilities[0], labels)
    m1 = scaletrain.load_run(run.run_dir / "members" / "m1").config
    np.testing.assert_allclose(
        np.load(m1.data.subsample.weights_file, allow_pickle=False), first.weights, rtol=1e-9
    )
    assert len(np.unique(subsample_indices(len(labels), m1.data.subsample))) < len(labels)
    with torch.no_grad():
        combined = run.model(inputs).argmax(1).numpy()
    expected = samme_r_predict(np.stack(member_probabilities))
    assert (combined == expected).mean() > 0.999  # float32 module vs float64 reference


def test_gradient_boosting_fits_residuals_and_sums_the_stages(tmp_path):
    cfg = _config(tmp_path, "gb", data="diabetes", epochs=5, learning_rate=0.5)
    cfg["ensemble"]["members"] = 3
    run = scaletrain.train(cfg)
    record = json.loads((run.run_dir / "ensemble.json").read_text())
    bundle = build_data(run.config.data, seed=0)
    targets = bundle.train.targets.float().reshape(-1)
    with torch.no_grad():
        stages = [member(bundle.train.inputs).float().reshape(-1) for member in run.model.members]
    weights, boosted, errors = record["weights"], torch.zeros_like(targets), []
    assert weights[0] == 1.0
    for index, (stage, weight) in enumerate(zip(stages, weights, strict=True)):
        if index:  # round r's member trained on what the rounds before left
            m = scaletrain.load_run(run.run_dir / "members" / f"m{index}").config
            stored = load_file(m.data.subsample.residuals_file)["train"].reshape(-1)
            torch.testing.assert_close(stored, targets - boosted, rtol=1e-4, atol=1e-5)
        boosted = boosted + weight * stage
        errors.append(float((targets - boosted).square().mean()))
    assert errors == sorted(errors, reverse=True) and errors[-1] < errors[0]
    assert [r["train_mse"] for r in record["rounds"]] == pytest.approx(errors, rel=1e-4)
    with torch.no_grad():  # the run's model is the weighted sum, in standardized units
        torch.testing.assert_close(run.model(bundle.train.inputs).reshape(-1), boosted)
    exported = scaletrain.load_run(run.run_dir).model.state_dict()["weights"]
    assert exported.tolist() == pytest.approx(weights)  # a sum: not normalized
    assert set(run.metrics["test"]) >= {"r2", "mse"}
