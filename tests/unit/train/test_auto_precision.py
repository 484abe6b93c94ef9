"""`train.precision: auto` on a CPU weighs the size of the model's products."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scaletrain.data import DataSpec
from scaletrain.models import forward_flops_per_layer
from scaletrain.train.precision import (
    CPU_BF16_MIN_LAYER_FLOPS,
    Precision,
    has_fast_bf16,
    run_precision,
)

CPU = torch.device("cpu")
BF16_IF_FAST = "bf16-mixed" if has_fast_bf16(CPU) else "32"


def _mlp(*widths: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def _spec(width: int) -> DataSpec:
    return DataSpec("classification", (width,), torch.float32, 10, None, None)


def test_flops_per_layer_is_the_forward_count_over_the_product_layers():
    model = _mlp(64, 256, 256, 10)
    expected = 2 * (64 * 256 + 256 * 256 + 256 * 10) / 3
    assert forward_flops_per_layer(model, (64,), torch.float32) == pytest.approx(expected)


def test_a_model_without_products_is_not_counted():
    assert forward_flops_per_layer(nn.Sequential(nn.ReLU()), (4,), torch.float32) is None


@pytest.mark.parametrize(
    ("layer_flops", "expected"),
    [
        (CPU_BF16_MIN_LAYER_FLOPS / 4, "32"),  # small products: the casts cost more
        (CPU_BF16_MIN_LAYER_FLOPS * 4, BF16_IF_FAST),
        (None, BF16_IF_FAST),  # not countable: as before, by the device alone
    ],
)
def test_auto_on_a_cpu_follows_the_product_size(layer_flops, expected):
    precision = Precision.from_config("auto", CPU, layer_flops=lambda: layer_flops)
    assert precision.name == expected


def test_explicit_precisions_are_kept_whatever_the_size():
    tiny = lambda: 1.0  # noqa: E731
    assert Precision.from_config("bf16-mixed", CPU, layer_flops=tiny).name == "bf16-mixed"
    assert Precision.from_config("32", CPU, layer_flops=tiny).name == "32"


def test_run_precision_scales_with_the_batch():
    model, spec = _mlp(64, 256, 256, 10), _spec(64)
    per_sample = forward_flops_per_layer(model, (64,), torch.float32)
    below = int(CPU_BF16_MIN_LAYER_FLOPS // per_sample)  # just under the threshold
    small = run_precision("auto", CPU, model=model, spec=spec, batch_size=below)
    large = run_precision("auto", CPU, model=model, spec=spec, batch_size=4 * below)
    assert (small.name, large.name) == ("32", BF16_IF_FAST)
