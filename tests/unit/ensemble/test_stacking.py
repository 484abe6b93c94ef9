"""Stacking: the combiner learns only from rows no member trained on, its output is what
`EnsembleModule` computes, and its fit is deterministic."""

import copy

import numpy as np
import torch
from torch import nn

from scaletrain.config import load_config, member_configs
from scaletrain.data import build_data
from scaletrain.data.transforms.subsample import subsample_indices
from scaletrain.ensemble.stacking import fit_combiner, member_features
from scaletrain.trained.combiner import COMBINER_FILE, build_combiner, load_combiner
from scaletrain.trained.ensemble import EnsembleModule


def _config(**ensemble):
    return load_config(
        {
            "run": {"name": "stack", "seed": 3, "out_dir": "unused"},
            "data": {"source": "builtin", "name": "digits"},
            "model": {"name": "mlp", "hidden": [8]},
            "ensemble": {"method": "stacking", "members": 3, **ensemble},
        }
    )


def _members(count: int = 3) -> list[nn.Module]:
    torch.manual_seed(0)
    return [nn.Sequential(nn.Flatten(), nn.Linear(64, 10)) for _ in range(count)]


def test_combiner_never_sees_a_members_in_sample_rows(tmp_path):
    cfg = _config()
    bundle = build_data(cfg.data, seed=cfg.run.seed)
    fit = fit_combiner(_members(), cfg, bundle, out=tmp_path)
    used = set(fit.rows)
    num_train = len(bundle.train)
    assert len(used) == round(0.2 * num_train)
    for member in member_configs(cfg):  # the rows each member's own data build trains on
        trained_on = subsample_indices(num_train, member.data.subsample)
        assert not used & set(trained_on.tolist())
        assert len(set(trained_on.tolist()) | used) == num_train  # every other row is used
        assert len(build_data(member.data, seed=member.run.seed).train) == num_train - len(used)


def test_learned_module_is_the_combiner_over_members_log_probabilities(tmp_path):
    cfg, members = _config(combiner="mlp"), _members()
    bundle = build_data(cfg.data, seed=cfg.run.seed)
    fit_combiner(members, cfg, bundle, out=tmp_path)
    combiner = load_combiner(tmp_path, "mlp", num_members=3, num_outputs=10)
    module = EnsembleModule(members, task="classification", combine="learned", combiner=combiner)
    inputs = bundle.test.inputs[:32]
    features = torch.cat([m(inputs).double().log_softmax(1) for m in members], dim=1)
    reference = copy.deepcopy(combiner).double()(features).log_softmax(1)
    torch.testing.assert_close(module(inputs).double(), reference, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        member_features(members, inputs, task="classification"), features.float()
    )


def test_linear_combiner_starts_at_the_members_mean():
    members, inputs = _members(), torch.randn(16, 1, 8, 8)
    combiner = build_combiner("linear", num_members=3, num_outputs=10)
    module = EnsembleModule(members, task="classification", combine="learned", combiner=combiner)
    mean = torch.stack([m(inputs).double().log_softmax(1) for m in members]).mean(0)
    torch.testing.assert_close(module(inputs).double(), mean.log_softmax(1), rtol=1e-5, atol=1e-6)


def test_fit_is_deterministic_and_beats_the_plain_mean_on_its_rows(tmp_path):
    cfg, members = _config(), _members()
    bundle = build_data(cfg.data, seed=cfg.run.seed)
    first = fit_combiner(members, cfg, bundle, out=tmp_path / "a")
    second = fit_combiner(members, cfg, bundle, out=tmp_path / "b")
    assert (tmp_path / "a" / COMBINER_FILE).read_bytes() == (
        tmp_path / "b" / COMBINER_FILE
    ).read_bytes()
    rows = torch.tensor(first.rows)
    features = member_features(members, bundle.train.inputs[rows], task="classification")
    targets = bundle.train.targets[rows].long()
    start = build_combiner("linear", num_members=3, num_outputs=10)
    before = nn.functional.cross_entropy(start(features), targets).item()
    assert first.loss == second.loss and first.loss < before
    assert np.isfinite(first.loss)
