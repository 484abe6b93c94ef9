"""safetensors export with the run's config, data spec and preprocessing: one file rebuilds a
predicting model with no run directory and no pickle, for every built-in model family."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import scaletrain
from scaletrain.errors import UserError

FAMILIES = ["mlp", "cnn", "resnet", "textcnn", "rnn-lstm", "rnn-gru", "gpt", "mlp-regression"]


def raw_inputs(run) -> object:
    """Raw samples as a user holds them: texts for a text run, numbers otherwise."""
    spec, _ = run.spec_and_preprocessor()
    if spec.input_kind == "text":
        return ["alpha beta gamma", "omega", "tau tau rho pi zeta", "sigma delta"]
    generator = np.random.default_rng(0)
    return (generator.random((6, *spec.input_shape)) * 16).astype(np.float32)


@pytest.mark.parametrize("name", FAMILIES)
def test_predictions_of_the_exported_file_equal_the_runs(family_run, name, tmp_path):
    run = family_run(name)
    path = scaletrain.export(run.run_dir, out=tmp_path / "model.safetensors")
    loaded = scaletrain.load_exported(path)
    inputs = raw_inputs(run)
    expected = scaletrain.load_run(run.run_dir).predict(inputs)
    got = loaded.predict(inputs)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert loaded.config.model == run.config.model


def test_the_exported_file_stands_alone(family_run, tmp_path):
    """Copied away from its run directory, which is then deleted."""
    run = family_run("textcnn")
    expected = run.predict(raw_inputs(run))
    source = tmp_path / "copy"
    shutil.copytree(run.run_dir, source)
    path = scaletrain.export(source, out=tmp_path / "alone.safetensors")
    shutil.rmtree(source)
    np.testing.assert_allclose(
        scaletrain.load_exported(path).predict(raw_inputs(run)), expected, atol=1e-6
    )


def test_a_user_module_export_needs_the_module(user_run):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(64, 10)

        def forward(self, inputs):
            return self.linear(inputs.flatten(1))

    run = user_run(Net())
    path = scaletrain.export(run.run_dir)
    with pytest.raises(UserError, match=r"pass a fresh instance: scaletrain.load_exported\("):
        scaletrain.load_exported(path)
    inputs = np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32)
    got = scaletrain.load_exported(path, model=Net()).predict(inputs)
    np.testing.assert_allclose(got, run.predict(inputs), atol=1e-6)
