"""SAMME's member weights and sample weights against numbers worked out by hand."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from scaletrain.data.transforms.subsample import weighted_draw
from scaletrain.ensemble.boosting import (
    is_better_than_chance,
    samme_predict,
    samme_round,
)
from scaletrain.trained.ensemble import EnsembleModule


def test_two_rounds_match_the_hand_computed_reference():
    # 5 rows, 3 classes, uniform start; round 1 gets row 4 wrong:
    # err = 0.2, alpha = log(0.8 / 0.2) + log(2) = log 8; row 4: 0.2 * 8 = 1.6, others 0.2;
    # sum 2.4 -> row 4: 2/3, others 1/12.
    first = samme_round(np.full(5, 0.2), np.array([1, 1, 1, 1, 0]), num_classes=3)
    assert first.error == pytest.approx(0.2)
    assert first.alpha == pytest.approx(math.log(8))
    np.testing.assert_allclose(first.weights, [1 / 12] * 4 + [2 / 3], rtol=1e-12)
    # round 2 gets rows 0 and 1 wrong: err = 2/12 = 1/6, alpha = log(5) + log(2) = log 10;
    # rows 0, 1: 10/12 each, rows 2, 3: 1/12, row 4: 8/12; sum 30/12.
    second = samme_round(first.weights, np.array([0, 0, 1, 1, 1]), num_classes=3)
    assert second.error == pytest.approx(1 / 6)
    assert second.alpha == pytest.approx(math.log(10))
    np.testing.assert_allclose(second.weights, [1 / 3, 1 / 3, 1 / 30, 1 / 30, 4 / 15])


def test_a_member_no_better_than_chance_ends_the_boosting():
    weak = samme_round(np.full(3, 1 / 3), np.array([1, 0, 0]), num_classes=3)
    assert weak.alpha == pytest.approx(0.0, abs=1e-12)  # err = 2/3 = 1 - 1/K
    assert not is_better_than_chance(weak)
    good = samme_round(np.full(3, 1 / 3), np.array([1, 1, 0]), num_classes=3)
    assert is_better_than_chance(good)


def test_weighted_draw_is_reproducible_and_follows_the_weights():
    weights = np.array([0.7, 0.1, 0.1, 0.1] * 2500)
    first = weighted_draw(weights, seed=5)
    assert np.array_equal(first, weighted_draw(weights, seed=5))
    assert not np.array_equal(first, weighted_draw(weights, seed=6))
    share_heavy = np.isin(first, np.arange(0, 10_000, 4)).mean()
    assert abs(share_heavy - 0.7) < 0.02


def test_samme_vote_equals_the_alpha_weighted_vote_module():
    torch.manual_seed(0)
    members, inputs = [nn.Linear(4, 3) for _ in range(3)], torch.randn(64, 4)
    alphas = np.array([0.5, 2.0, 1.0])
    labels = np.stack([m(inputs).argmax(1).numpy() for m in members])
    module = EnsembleModule(members, task="classification", combine="vote", weights=alphas)
    expected = samme_predict(labels, alphas, num_classes=3)
    assert np.array_equal(module(inputs).argmax(1).numpy(), expected)
