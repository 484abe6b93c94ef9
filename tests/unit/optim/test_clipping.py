"""Gradient clipping: the returned norm is the pre-clip total 2-norm; grads match torch."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from scaletrain.config import ClipConfig
from scaletrain.optim import clip_gradients


def model_with_grads() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3), nn.Linear(3, 2))
    model[3].requires_grad_(False)  # a parameter without a gradient is skipped
    inputs = torch.randn(32, 5) * 10
    model(inputs).pow(2).sum().backward()
    return model


def reference_norm(model: nn.Module) -> torch.Tensor:
    grads = [
        param.grad.double().flatten() for param in model.parameters() if param.grad is not None
    ]
    return torch.cat(grads).norm()


def grads_of(model: nn.Module) -> list[torch.Tensor]:
    return [param.grad.clone() for param in model.parameters() if param.grad is not None]


def test_none_measures_the_norm_and_leaves_grads():
    model = model_with_grads()
    before = grads_of(model)
    norm = clip_gradients(ClipConfig(mode="none"), model.parameters())
    assert norm.dim() == 0 and isinstance(norm, torch.Tensor)
    assert torch.allclose(norm.double(), reference_norm(model), rtol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(before, grads_of(model), strict=True))


def test_norm_clips_like_torch_and_returns_the_pre_clip_norm():
    model = model_with_grads()
    reference = copy.deepcopy(model)
    for param, reference_param in zip(model.parameters(), reference.parameters(), strict=True):
        reference_param.grad = None if param.grad is None else param.grad.clone()
    pre_clip = reference_norm(model)
    assert pre_clip > 1.0  # so clipping to 1.0 does something
    norm = clip_gradients(ClipConfig(mode="norm", max=1.0), model.parameters())
    reference_returned = torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
    assert torch.equal(norm, reference_returned)
    assert torch.allclose(norm.double(), pre_clip, rtol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(grads_of(model), grads_of(reference), strict=True))
    assert reference_norm(model).item() == pytest.approx(1.0, rel=1e-5)


def test_norm_below_the_limit_leaves_grads():
    model = model_with_grads()
    before = grads_of(model)
    clip_gradients(ClipConfig(mode="norm", max=1e9), model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, grads_of(model), strict=True))


def test_value_clamps_each_entry_and_returns_the_pre_clip_norm():
    model = model_with_grads()
    before = grads_of(model)
    pre_clip = reference_norm(model)
    assert max(grad.abs().max() for grad in before) > 0.5
    norm = clip_gradients(ClipConfig(mode="value", max=0.5), model.parameters())
    assert torch.allclose(norm.double(), pre_clip, rtol=1e-6)
    for old, new in zip(before, grads_of(model), strict=True):
        assert torch.equal(new, old.clamp(-0.5, 0.5))


def test_no_gradients_give_zero():
    model = nn.Linear(3, 2)
    assert clip_gradients(ClipConfig(mode="norm"), model.parameters()).item() == 0.0


def test_mixed_dtypes_take_the_general_path_and_agree():
    model = model_with_grads()
    model[0].double()  # one layer in float64: not the one-device-one-dtype fast path
    model[0].weight.grad = model[0].weight.grad.double()
    model[0].bias.grad = model[0].bias.grad.double()
    norm = clip_gradients(ClipConfig(mode="none"), model.parameters())
    assert torch.allclose(norm.double(), reference_norm(model), rtol=1e-6)


def test_gradient_sum_is_the_float64_sum_and_flags_any_nonfinite_element():
    from scaletrain.optim import gradient_sum

    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape)) for shape in [(40, 30), (30,), (5, 2)]]
    frozen = torch.nn.Parameter(torch.randn(3))  # no gradient: skipped
    for param in params:
        param.grad = torch.randn_like(param)
    reference = sum(param.grad.double().sum() for param in params)
    total = gradient_sum([*params, frozen])
    assert total.dim() == 0 and total.dtype == torch.float32
    torch.testing.assert_close(total.double(), reference, rtol=1e-5, atol=1e-5)
    for bad in (math.nan, math.inf, -math.inf):
        params[1].grad[7] = bad
        assert not math.isfinite(float(gradient_sum(params))), bad
        params[1].grad[7] = 0.0
    assert gradient_sum([frozen]).item() == 0.0
