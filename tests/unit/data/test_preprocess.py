"""Preprocessing: fit on the train split only, float64 references, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scaletrain.config import DataConfig
from scaletrain.data import Preprocessor, build_data
from scaletrain.data.transforms.split import split_indices


def raw_and_scaled(name: str, *, normalize: str = "standardize", layout: str = "auto"):
    raw = build_data(DataConfig(name=name, normalize="none", layout=layout), seed=2)
    scaled = build_data(DataConfig(name=name, normalize=normalize, layout=layout), seed=2)
    return raw, scaled


@pytest.mark.parametrize("name", ["wine", "diabetes"])
def test_standardize_statistics_are_the_train_split_mean_and_std(name):
    raw, scaled = raw_and_scaled(name)
    train = raw.train.inputs.numpy().astype(np.float64)  # numpy float64 reference
    preprocessor = scaled.preprocessor
    np.testing.assert_allclose(preprocessor.shift.numpy(), train.mean(0), rtol=1e-12)
    np.testing.assert_allclose(preprocessor.scale.numpy(), train.std(0, ddof=0), rtol=1e-12)
    everything = torch.cat([raw.train.inputs, raw.val.inputs, raw.test.inputs]).numpy()
    assert not np.allclose(preprocessor.shift.numpy(), everything.astype(np.float64).mean(0))
    # Scaled train features: mean 0 and std 1, up to float32 rounding.
    scaled_train = scaled.train.inputs.numpy().astype(np.float64)
    np.testing.assert_allclose(scaled_train.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(scaled_train.std(0), 1.0, atol=1e-5)


def test_images_are_standardized_per_channel():
    raw, scaled = raw_and_scaled("digits")
    train = raw.train.inputs.double()  # (N, 1, 8, 8)
    assert scaled.preprocessor.shift.shape == (1, 1, 1)
    assert torch.allclose(scaled.preprocessor.shift.reshape(1), train.mean().reshape(1), rtol=1e-12)
    assert torch.allclose(
        scaled.preprocessor.scale.reshape(1), train.std(unbiased=False).reshape(1), rtol=1e-12
    )
    three_channels = torch.rand(20, 3, 4, 4, dtype=torch.float64) * torch.tensor(
        [1.0, 5.0, 9.0]
    ).reshape(1, 3, 1, 1)
    preprocessor = Preprocessor.fit("standardize", three_channels.float(), is_image=True)
    reference = three_channels.float().double().transpose(0, 1).reshape(3, -1)
    assert torch.allclose(preprocessor.shift.reshape(3), reference.mean(1), rtol=1e-12)
    assert torch.allclose(
        preprocessor.scale.reshape(3), reference.std(1, unbiased=False), rtol=1e-12
    )


@pytest.mark.parametrize("normalize", ["standardize", "minmax"])
def test_transform_equals_the_manual_formula(normalize):
    raw, scaled = raw_and_scaled("wine", normalize=normalize)
    train = raw.train.inputs.double()
    if normalize == "standardize":
        shift, scale = train.mean(0), train.std(0, unbiased=False)
    else:
        shift, scale = train.amin(0), train.amax(0) - train.amin(0)
    for raw_split, scaled_split in ((raw.train, scaled.train), (raw.test, scaled.test)):
        expected = (raw_split.inputs.double() - shift) / scale
        assert scaled_split.inputs.dtype == torch.float32
        assert torch.allclose(scaled_split.inputs.double(), expected, atol=1e-5)
        assert torch.allclose(scaled.preprocessor.transform(raw_split.inputs), scaled_split.inputs)
    if normalize == "minmax":
        assert torch.allclose(scaled.train.inputs.amin(0), torch.zeros(13), atol=1e-6)
        assert torch.allclose(scaled.train.inputs.amax(0), torch.ones(13), atol=1e-6)


def test_test_split_does_not_leak_into_the_statistics(tmp_path):
    """Change every test-split row of a CSV: the fitted preprocessor stays the same."""
    generator = np.random.default_rng(0)
    features = generator.normal(size=(100, 3))
    labels = np.arange(100) % 2
    cut = split_indices(100, val_fraction=0.1, test_fraction=0.2, seed=5, stratify_labels=labels)

    def fit(values: np.ndarray) -> dict:
        rows = ["a,b,c,label"] + [
            ",".join(map(repr, map(float, row))) + f",{label}"
            for row, label in zip(values, labels, strict=True)
        ]
        (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
        return build_data(DataConfig(source="csv", path=str(tmp_path / "data.csv")), seed=5)

    original = fit(features)
    changed_features = features.copy()
    changed_features[cut.test] = 1000.0 + 50 * changed_features[cut.test]
    changed = fit(changed_features)
    assert original.preprocessor.state_dict() == changed.preprocessor.state_dict()
    assert torch.equal(original.train.inputs, changed.train.inputs)
    assert not torch.equal(original.test.inputs, changed.test.inputs)
    changed_features[cut.train[:3]] += 1.0  # a train row does change the statistics
    assert fit(changed_features).preprocessor.state_dict() != original.preprocessor.state_dict()


def test_user_test_data_does_not_leak():
    generator = np.random.default_rng(1)
    x_train, x_test = generator.normal(size=(80, 4)), generator.normal(size=(20, 4))
    y_train, y_test = np.arange(80) % 2, np.arange(20) % 2
    first = build_data(
        DataConfig(), seed=0, user_data={"train": (x_train, y_train), "test": (x_test, y_test)}
    )
    second = build_data(
        DataConfig(),
        seed=0,
        user_data={"train": (x_train, y_train), "test": (x_test * 9 + 3, y_test)},
    )
    assert first.preprocessor.state_dict() == second.preprocessor.state_dict()


@pytest.mark.parametrize("normalize", ["standardize", "minmax", "none"])
def test_state_dict_json_round_trip(normalize):
    _, scaled = raw_and_scaled("digits", normalize=normalize)
    state = json.loads(json.dumps(scaled.preprocessor.state_dict()))
    restored = Preprocessor.from_state_dict(state)
    assert restored.state_dict() == scaled.preprocessor.state_dict()
    inputs = torch.rand(7, 1, 8, 8) * 16
    assert torch.equal(restored.transform(inputs), scaled.preprocessor.transform(inputs))


def test_constant_feature_gets_scale_one_and_none_is_identity():
    inputs = torch.tensor([[1.0, 5.0], [3.0, 5.0], [8.0, 5.0]])
    standardize = Preprocessor.fit("standardize", inputs, is_image=False)
    minmax = Preprocessor.fit("minmax", inputs, is_image=False)
    assert standardize.scale[1] == 1.0 and minmax.scale[1] == 1.0
    assert torch.equal(standardize.transform(inputs)[:, 1], torch.zeros(3))
    assert torch.equal(minmax.transform(inputs)[:, 1], torch.zeros(3))
    identity = Preprocessor.fit("none", inputs, is_image=False)
    assert identity.transform(inputs) is inputs
