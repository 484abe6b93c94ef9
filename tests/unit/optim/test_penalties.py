"""Penalties: value and gradient vs closed forms in float64; which parameters are selected."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scaletrain.config import PenaltyConfig
from scaletrain.optim import build_penalty


def make_model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)).double()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_()  # BatchNorm starts at ones/zeros: make every value distinct
        model[0].weight[0, :2] = 0.0  # |w| has gradient sign(0) = 0 here
    return model


WEIGHTS = ["0.weight", "2.weight"]
ALL = ["0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias"]


@pytest.mark.parametrize(("l1", "l2"), [(0.3, 0.0), (0.0, 0.7), (0.3, 0.7)])
@pytest.mark.parametrize("include", [False, True])
def test_value_and_gradient_equal_closed_form(l1, l2, include):
    model = make_model()
    cfg = PenaltyConfig(l1=l1, l2=l2, include_bias_and_norm=include)
    penalty = build_penalty(cfg, model)
    selected = ALL if include else WEIGHTS
    named = dict(model.named_parameters())
    value = penalty()
    want = sum(l1 * named[key].abs().sum() + l2 * (named[key] ** 2).sum() for key in selected)
    assert value.dtype == torch.float64
    assert torch.allclose(value, want, rtol=1e-14, atol=0)
    value.backward()
    for key, param in named.items():
        if key in selected:
            closed_form = l1 * torch.sign(param) + 2 * l2 * param
            assert torch.allclose(param.grad, closed_form, rtol=1e-14, atol=1e-15), key
        else:
            assert param.grad is None, key  # excluded parameters are not in the graph


def test_off_when_both_coefficients_are_zero():
    assert build_penalty(PenaltyConfig(include_bias_and_norm=True), make_model()) is None


def test_frozen_parameters_are_not_penalized():
    model = make_model()
    model[2].requires_grad_(False)
    penalty = build_penalty(PenaltyConfig(l2=1.0), model)
    assert [id(param) for param in penalty.params] == [id(model[0].weight)]
    assert torch.allclose(penalty(), (model[0].weight ** 2).sum(), rtol=1e-14)


def test_bf16_weights_are_penalized_in_float32():
    model = nn.Linear(64, 64).to(torch.bfloat16)
    value = build_penalty(PenaltyConfig(l2=1.0), model)()
    want = model.weight.double().square().sum()
    assert value.dtype == torch.float32
    assert abs(value.double() - want) / want < 1e-5


@pytest.mark.parametrize(("l1", "l2"), [(0.3, 0.0), (0.0, 0.7), (0.3, 0.7)])
def test_added_gradients_equal_those_of_the_penalty_in_the_loss(l1, l2):
    """What the trainer does (closed-form gradients added after backward) equals
    differentiating loss + penalty, in float64."""
    inputs = torch.randn(8, 4, dtype=torch.float64)
    in_loss, added = make_model(), make_model()
    cfg = PenaltyConfig(l1=l1, l2=l2)
    (in_loss(inputs).square().mean() + build_penalty(cfg, in_loss)()).backward()
    added(inputs).square().mean().backward()
    build_penalty(cfg, added).add_to_gradients()
    for (name, want), got in zip(in_loss.named_parameters(), added.parameters(), strict=True):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-12, atol=1e-14, msg=name)
    # a penalized parameter without a gradient (unused in forward) gets the penalty's alone
    weight = added[2].weight
    weight.grad = None
    build_penalty(cfg, added).add_to_gradients()
    torch.testing.assert_close(
        weight.grad, l1 * weight.sign() + 2 * l2 * weight, rtol=1e-14, atol=0
    )
