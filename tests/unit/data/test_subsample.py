"""`data.subsample`: a bagging member's rows, reproducible from its seed, train split only."""

import numpy as np
import torch

from scaletrain.config import SubsampleConfig, load_config
from scaletrain.data import build_data
from scaletrain.data.transforms.subsample import subsample_indices


def test_indices_are_a_function_of_the_seed_and_differ_between_seeds():
    first = subsample_indices(1000, SubsampleConfig(seed=1))
    assert np.array_equal(first, subsample_indices(1000, SubsampleConfig(seed=1)))
    assert not np.array_equal(first, subsample_indices(1000, SubsampleConfig(seed=2)))


def test_bootstrap_repeats_rows_and_leaves_about_a_third_out():
    rows = subsample_indices(10_000, SubsampleConfig(seed=0, replacement=True))
    assert len(rows) == 10_000 and rows.min() >= 0 and rows.max() < 10_000
    left_out = 1 - len(np.unique(rows)) / 10_000
    assert abs(left_out - np.exp(-1)) < 0.02  # (1 - 1/n)^n -> 1/e


def test_without_replacement_rows_are_distinct_and_count_the_fraction():
    rows = subsample_indices(200, SubsampleConfig(seed=3, fraction=0.25, replacement=False))
    assert len(rows) == 50 and len(np.unique(rows)) == 50


def _digits(**data) -> dict:
    return {"data": {"source": "builtin", "name": "digits", **data}}


def test_build_data_samples_the_train_split_only():
    full = build_data(load_config(_digits()).data, seed=0)
    sampled_cfg = load_config(_digits(subsample={"fraction": 0.5, "seed": 4, "replacement": False}))
    sampled = build_data(sampled_cfg.data, seed=0)
    rows = subsample_indices(len(full.train), sampled_cfg.data.subsample)
    assert torch.equal(sampled.train.inputs, full.train.inputs[torch.from_numpy(rows)])
    assert torch.equal(sampled.train.targets, full.train.targets[torch.from_numpy(rows)])
    for name in ("val", "test"):
        assert torch.equal(getattr(sampled, name).inputs, getattr(full, name).inputs)
    # the preprocessing was fit on the whole train split: members share it
    assert sampled.preprocessor.state_dict() == full.preprocessor.state_dict()


def test_split_seed_overrides_the_run_seed():
    pinned = load_config(_digits(split_seed=5)).data
    assert torch.equal(
        build_data(pinned, seed=0).test.targets, build_data(pinned, seed=99).test.targets
    )
    free = load_config(_digits()).data
    assert not torch.equal(
        build_data(free, seed=0).test.targets, build_data(free, seed=99).test.targets
    )


def test_holdout_rows_are_left_out_of_every_draw_and_unchanged_draws_without_it():
    plain = SubsampleConfig(seed=4, replacement=True)
    held = SubsampleConfig(seed=4, replacement=True, holdout=0.2, holdout_seed=9)
    rows = subsample_indices(500, held)
    from scaletrain.data.transforms.subsample import holdout_indices

    left_out = holdout_indices(500, 0.2, seed=9)
    assert len(left_out) == 100 and not set(rows.tolist()) & set(left_out.tolist())
    assert len(rows) == 400  # the fraction is of the rows that remain
    assert np.array_equal(subsample_indices(500, plain), subsample_indices(500, plain))
    assert np.array_equal(  # holdout 0 draws exactly what bagging drew before it existed
        subsample_indices(500, plain), np.sort(np.random.default_rng(4).integers(0, 500, 500))
    )


def test_a_bad_weights_file_is_one_line_naming_the_file(tmp_path):
    import pytest

    from scaletrain.errors import UserError

    path = tmp_path / "w.npy"
    np.save(path, np.ones(3))
    with pytest.raises(UserError, match="data.subsample.weights_file: .*w.npy must hold 5"):
        subsample_indices(5, SubsampleConfig(weights_file=str(path)))
    np.save(path, np.array([1.0, 0, 0, 0, 0]))
    assert subsample_indices(5, SubsampleConfig(weights_file=str(path))).tolist() == [0] * 5
