"""The combined module against float64 references, and the members' diversity."""

import pytest
import torch
from torch import nn

from scaletrain.ensemble.evaluate import diversity_of
from scaletrain.trained.ensemble import EnsembleModule


def _members(num_outputs: int, count: int = 3) -> list[nn.Module]:
    torch.manual_seed(0)
    return [nn.Linear(4, num_outputs) for _ in range(count)]


def test_mean_returns_log_of_the_mean_probability():
    members, inputs = _members(5), torch.randn(16, 4)
    combined = EnsembleModule(members, task="classification", combine="mean")(inputs)
    reference = torch.stack([m(inputs).double().softmax(1) for m in members]).mean(0)
    torch.testing.assert_close(combined.softmax(1).double(), reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(combined.exp().double(), reference, rtol=1e-5, atol=1e-6)


def test_weighted_mean_uses_normalized_weights():
    members, inputs = _members(3), torch.randn(8, 4)
    module = EnsembleModule(members, task="classification", combine="weighted", weights=[1, 1, 2])
    reference = sum(
        w * m(inputs).double().softmax(1) for w, m in zip([0.25, 0.25, 0.5], members, strict=True)
    )
    torch.testing.assert_close(module(inputs).exp().double(), reference, rtol=1e-5, atol=1e-6)


def test_vote_is_the_share_of_members_per_class():
    members, inputs = _members(4), torch.randn(32, 4)
    shares = EnsembleModule(members, task="classification", combine="vote")(inputs).exp()
    labels = torch.stack([m(inputs).argmax(1) for m in members])  # (K, B)
    for sample in range(32):
        for label in range(4):
            expected = (labels[:, sample] == label).double().mean().item()
            assert shares[sample, label].item() == pytest.approx(expected, abs=1e-6)


def test_regression_is_the_mean_value():
    members, inputs = _members(2), torch.randn(8, 4)
    combined = EnsembleModule(members, task="regression", combine="mean")(inputs)
    reference = torch.stack([m(inputs).double() for m in members]).mean(0)
    torch.testing.assert_close(combined.double(), reference, rtol=1e-6, atol=1e-6)


def _one_hot(labels: list[int]) -> torch.Tensor:
    return nn.functional.one_hot(torch.tensor(labels), 3).float()


def test_disagreement_and_agreement_matrix_by_hand():
    outputs = [_one_hot([0, 1, 2, 0]), _one_hot([0, 1, 2, 1]), _one_hot([1, 1, 0, 1])]
    result = diversity_of(outputs, task="classification")
    # pairs agree on 3/4, 1/4, 2/4 of the samples
    assert result["agreement_matrix"] == [[1, 0.75, 0.25], [0.75, 1, 0.5], [0.25, 0.5, 1]]
    assert result["disagreement"] == pytest.approx(1 - (0.75 + 0.25 + 0.5) / 3)
