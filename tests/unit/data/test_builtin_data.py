"""Built-in datasets: spec, contents against scikit-learn, stratified and seeded splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import datasets as sklearn_datasets

from scaletrain.config import DataConfig
from scaletrain.data import DATASETS, build_data
from scaletrain.data.transforms.split import split_indices
from scaletrain.errors import ConfigError

EXPECTED = {
    # name: (task, input_shape, num_outputs, num_samples, first class name, is_image)
    "digits": ("classification", (1, 8, 8), 10, 1797, "0", True),
    "iris": ("classification", (4,), 3, 150, "setosa", False),
    "wine": ("classification", (13,), 3, 178, "class_0", False),
    "breast_cancer": ("classification", (30,), 2, 569, "malignant", False),
    "diabetes": ("regression", (10,), 1, 442, None, False),
}
SKLEARN = {
    "digits": lambda: sklearn_datasets.load_digits(),
    "iris": lambda: sklearn_datasets.load_iris(),
    "wine": lambda: sklearn_datasets.load_wine(),
    "breast_cancer": lambda: sklearn_datasets.load_breast_cancer(),
    "diabetes": lambda: sklearn_datasets.load_diabetes(scaled=False),
}


def test_every_builtin_is_registered():
    assert set(EXPECTED) <= set(DATASETS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_spec(name):
    task, shape, num_outputs, num_samples, first_class, is_image = EXPECTED[name]
    bundle = build_data(DataConfig(name=name), seed=0)
    spec = bundle.spec
    assert (spec.task, spec.input_shape, spec.num_outputs, spec.is_image) == (
        task,
        shape,
        num_outputs,
        is_image,
    )
    assert spec.input_dtype == torch.float32
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == num_samples
    assert tuple(bundle.train.inputs.shape[1:]) == shape
    if task == "classification":
        assert spec.class_names[0] == first_class and len(spec.class_names) == num_outputs
        assert bundle.train.targets.dtype == torch.int64
        counts = torch.bincount(bundle.train.targets, minlength=num_outputs).tolist()
        assert spec.class_counts == counts and sum(counts) == len(bundle.train)
    else:
        assert spec.class_names is None and spec.class_counts is None
        assert bundle.train.targets.dtype == torch.float32
        assert bundle.train.targets.shape == (len(bundle.train), 1)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_contents_match_sklearn(name):
    """Unscaled split rows are exactly sklearn's rows at the split's indices."""
    cfg = DataConfig(name=name, normalize="none", normalize_target="none", layout="flat")
    bundle = build_data(cfg, seed=3)
    sklearn_bunch = SKLEARN[name]()
    stratify = sklearn_bunch.target if EXPECTED[name][0] == "classification" else None
    indices = split_indices(
        len(sklearn_bunch.data),
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=3,
        stratify_labels=stratify,
    )
    for split, rows in ((bundle.train, indices.train), (bundle.test, indices.test)):
        expected = torch.from_numpy(sklearn_bunch.data[rows].astype(np.float32))
        assert torch.equal(split.inputs, expected)
        target = torch.as_tensor(sklearn_bunch.target[rows])
        assert torch.equal(split.targets.reshape(-1).to(target.dtype), target)


def test_digits_layouts_and_raw_values():
    image = build_data(DataConfig(name="digits", layout="image", normalize="none"), seed=0)
    flat = build_data(DataConfig(name="digits", layout="flat", normalize="none"), seed=0)
    assert image.spec.input_shape == (1, 8, 8) and image.spec.is_image
    assert flat.spec.input_shape == (64,) and not flat.spec.is_image
    assert torch.equal(image.train.inputs.reshape(-1, 64), flat.train.inputs)
    values = flat.train.inputs
    assert values.min() == 0 and values.max() == 16 and torch.equal(values, values.round())


def test_image_layout_on_a_table_is_a_config_error():
    with pytest.raises(ConfigError, match=r"data.layout: `image` needs \(N, C, H, W\)"):
        build_data(DataConfig(name="iris", layout="image"), seed=0)


def test_unknown_builtin_suggests_the_closest_name():
    with pytest.raises(ConfigError, match="did you mean 'digits'"):
        build_data(DataConfig(name="digit"), seed=0)


@pytest.mark.parametrize("name", ["digits", "wine", "breast_cancer"])
def test_stratified_split_keeps_class_proportions(name):
    cfg = DataConfig(name=name, val_fraction=0.15, test_fraction=0.25)
    bundle = build_data(cfg, seed=1)
    num_classes = bundle.spec.num_outputs
    per_split = {
        split_name: torch.bincount(split.targets, minlength=num_classes).double()
        for split_name, split in (
            ("train", bundle.train),
            ("val", bundle.val),
            ("test", bundle.test),
        )
    }
    totals = sum(per_split.values())
    for split_name, fraction in (("val", 0.15), ("test", 0.25), ("train", 0.6)):
        # Stratification rounds each class's share to a whole sample, per cut (two cuts).
        deviation = (per_split[split_name] - fraction * totals).abs().max().item()
        assert deviation <= 2.0, (split_name, per_split[split_name], fraction * totals)
    assert len(bundle.test) == pytest.approx(0.25 * totals.sum().item(), abs=1)
    assert len(bundle.val) == pytest.approx(0.15 * totals.sum().item(), abs=1)


def test_unstratified_split_differs_from_stratified():
    stratified = build_data(DataConfig(name="wine"), seed=0)
    plain = build_data(DataConfig(name="wine", stratify=False), seed=0)
    assert len(plain.train) == len(stratified.train)
    assert not torch.equal(plain.train.inputs, stratified.train.inputs)


def test_split_is_a_function_of_the_seed():
    first = build_data(DataConfig(name="iris"), seed=7)
    again = build_data(DataConfig(name="iris"), seed=7)
    other = build_data(DataConfig(name="iris"), seed=8)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(first, split).inputs, getattr(again, split).inputs)
        assert torch.equal(getattr(first, split).targets, getattr(again, split).targets)
    assert not torch.equal(first.test.inputs, other.test.inputs)


def test_zero_fractions_give_no_split():
    bundle = build_data(DataConfig(name="iris", val_fraction=0.0, test_fraction=0.0), seed=0)
    assert bundle.val is None and bundle.test is None and len(bundle.train) == 150
    bundle = build_data(DataConfig(name="iris", val_fraction=0.0), seed=0)
    assert bundle.val is None and len(bundle.test) == 30 and len(bundle.train) == 120


def test_splits_are_disjoint_and_cover_everything():
    indices = split_indices(1000, val_fraction=0.1, test_fraction=0.2, seed=5)
    everything = np.concatenate([indices.train, indices.val, indices.test])
    assert np.array_equal(np.sort(everything), np.arange(1000))
    assert (len(indices.train), len(indices.val), len(indices.test)) == (700, 100, 200)


def test_task_override_turns_classes_into_regression():
    bundle = build_data(
        DataConfig(name="iris", task="regression", normalize="none", normalize_target="none"),
        seed=0,
    )
    assert bundle.spec.task == "regression" and bundle.spec.num_outputs == 1
    assert bundle.train.targets.dtype == torch.float32
    assert set(bundle.train.targets.reshape(-1).tolist()) == {0.0, 1.0, 2.0}
