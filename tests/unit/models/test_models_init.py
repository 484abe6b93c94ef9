"""Each init scheme against its closed-form mean / std / bounds on large layers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from scaletrain.config import CNNConfig, InitConfig, TextCNNConfig
from scaletrain.models import INITS, apply_init, build_model

FAN = 512  # a 512x512 layer: 262,144 draws, so the sample std is within ~0.3% of the truth


def _fans(weight: torch.Tensor) -> tuple[int, int]:
    receptive = math.prod(weight.shape[2:])
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def _expected(cfg: InitConfig, weight: torch.Tensor) -> tuple[float, float | None]:
    """Closed-form (std, bound) of each scheme; bound None for unbounded normals."""
    fan_in, fan_out = _fans(weight)
    xavier_std = cfg.gain * math.sqrt(2.0 / (fan_in + fan_out))
    kaiming_std = math.sqrt(2.0 / fan_in)  # gain sqrt(2) for relu
    return {
        "normal": (cfg.std, None),
        "uniform": (cfg.bound / math.sqrt(3), cfg.bound),
        "xavier_uniform": (xavier_std, math.sqrt(3) * xavier_std),
        "xavier_normal": (xavier_std, None),
        "kaiming_uniform": (kaiming_std, math.sqrt(3) * kaiming_std),
        "kaiming_normal": (kaiming_std, None),
    }[cfg.name]


STATISTIC_CASES = [
    InitConfig(name="normal", std=0.07),
    InitConfig(name="uniform", bound=0.3),
    InitConfig(name="xavier_uniform", gain=2.0),
    InitConfig(name="xavier_normal", gain=0.5),
    InitConfig(name="kaiming_uniform"),
    InitConfig(name="kaiming_normal"),
]


@pytest.mark.parametrize("cfg", STATISTIC_CASES, ids=lambda cfg: cfg.name)
@pytest.mark.parametrize(
    "layer_factory",
    [lambda: nn.Linear(FAN, FAN // 2), lambda: nn.Conv2d(64, 128, 3)],
    ids=["linear", "conv2d"],
)
def test_weight_statistics_match_formula(cfg, layer_factory):
    torch.manual_seed(0)
    layer = layer_factory()
    apply_init(layer, cfg)
    weight = layer.weight.detach().double()
    std, bound = _expected(cfg, weight)
    num_draws = weight.numel()
    assert abs(weight.mean().item()) < 5 * std / math.sqrt(num_draws)
    assert weight.std().item() == pytest.approx(std, rel=0.02)
    if bound is not None:
        assert weight.abs().max().item() <= bound
        assert weight.abs().max().item() > 0.99 * bound  # the whole range is used
    torch.testing.assert_close(layer.bias, torch.zeros_like(layer.bias))


@pytest.mark.parametrize(("rows", "columns"), [(FAN, FAN), (FAN // 2, FAN)])
@pytest.mark.parametrize("gain", [1.0, 1.7])
def test_orthogonal_rows_are_orthonormal_times_gain(rows, columns, gain):
    torch.manual_seed(0)
    layer = nn.Linear(columns, rows)
    apply_init(layer, InitConfig(name="orthogonal", gain=gain))
    weight = layer.weight.detach().double()
    gram = weight @ weight.T
    torch.testing.assert_close(
        gram, gain**2 * torch.eye(rows, dtype=torch.float64), atol=1e-4, rtol=0
    )
    assert torch.count_nonzero(layer.bias) == 0


def test_orthogonal_tall_matrix_has_orthonormal_columns():
    torch.manual_seed(0)
    layer = nn.Linear(64, 256)  # weight (256, 64): more rows than columns
    apply_init(layer, InitConfig(name="orthogonal"))
    weight = layer.weight.detach().double()
    torch.testing.assert_close(
        weight.T @ weight, torch.eye(64, dtype=torch.float64), atol=1e-4, rtol=0
    )


def test_zeros_sets_every_weight_and_bias_to_zero():
    model = nn.Sequential(nn.Conv1d(3, 4, 2), nn.Linear(4, 5), nn.Embedding(6, 4))
    apply_init(model, InitConfig(name="zeros"))
    for parameter in model.parameters():
        assert torch.count_nonzero(parameter) == 0


def test_default_keeps_pytorch_init():
    torch.manual_seed(5)
    expected = nn.Linear(10, 7).state_dict()
    torch.manual_seed(5)
    layer = nn.Linear(10, 7)
    apply_init(layer, InitConfig(name="default"))
    for key, value in layer.state_dict().items():
        assert torch.equal(value, expected[key])
    assert torch.count_nonzero(layer.bias) > 0  # biases are not zeroed under `default`


def test_norm_layers_are_left_alone():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.LayerNorm(4))
    apply_init(model, InitConfig(name="normal", std=1.0))
    torch.testing.assert_close(model[1].weight, torch.ones(4))
    torch.testing.assert_close(model[2].bias, torch.zeros(4))


@pytest.mark.parametrize("name", sorted(INITS))
def test_every_init_keeps_embedding_padding_row_zero(name):
    torch.manual_seed(0)
    cfg = TextCNNConfig(init=InitConfig(name=name), padding_idx=3, embed_dim=16)
    model = build_model(cfg, input_shape=(10,), num_outputs=2, vocab_size=40)
    weight = model.embedding.weight
    assert torch.count_nonzero(weight[3]) == 0
    if name != "zeros":
        others = torch.cat([weight[:3], weight[4:]])
        assert torch.count_nonzero(others) == others.numel()
    if name not in ("default", "zeros"):
        for block in model.blocks:
            assert torch.count_nonzero(block.conv.bias) == 0


def test_build_model_applies_init_to_every_layer():
    cfg = CNNConfig(channels=[4], batch_norm=False, head=[8], init=InitConfig(name="zeros"))
    model = build_model(cfg, input_shape=(1, 4, 4), num_outputs=2)
    for name, parameter in model.named_parameters():
        assert torch.count_nonzero(parameter) == 0, name


def test_inits_registry_names_every_config_choice_with_a_description():
    choices = set(InitConfig.model_fields["name"].annotation.__args__)
    assert set(INITS) == choices
    assert all(function.__doc__ for function in INITS.values())
