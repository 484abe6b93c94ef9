"""Unstructured pruning hits the asked sparsity exactly; the cubic schedule; structured
shrinking computes what the original network computes with the removed units silenced."""

from __future__ import annotations

import pytest
import torch

from scaletrain.compress.prune import cubic_schedule, prune_unstructured, sparsity_of
from scaletrain.compress.shrink import copy_kept, shrunk_config
from scaletrain.config import CNNConfig, MLPConfig
from scaletrain.models.cnn import CNN
from scaletrain.models.mlp import MLP


def _cnn(channels=(6, 8), head=(10,)) -> CNN:
    torch.manual_seed(0)
    cfg = CNNConfig(channels=list(channels), head=list(head))
    model = CNN(cfg, input_shape=(1, 8, 8), num_outputs=4)
    for module in model.modules():  # non-trivial BatchNorm state, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(-1, 1)
            module.bias.data.uniform_(-0.5, 0.5)
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2)
    return model.eval()


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.9])
def test_global_pruning_reaches_the_exact_sparsity(fraction):
    model = _cnn()
    weights = [
        m.weight for m in model.modules() if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)
    ]
    total = sum(w.numel() for w in weights)
    masks = prune_unstructured(model, fraction, scope="global")
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == round(fraction * total)
    assert sparsity_of(model) == pytest.approx(fraction, abs=1 / total)
    assert sum(int((~mask).sum()) for mask in masks.values()) == zeros
    assert not any("weight_orig" in name for name in model.state_dict())  # made permanent


def test_layer_pruning_prunes_each_layer_by_the_fraction():
    model = MLP(MLPConfig(hidden=[32, 16]), in_features=20, num_outputs=3)
    prune_unstructured(model, 0.25, scope="layer")
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            assert int((module.weight == 0).sum()) == round(0.25 * module.weight.numel())


def test_cubic_schedule_matches_zhu_and_gupta():
    steps = cubic_schedule(0.8, 4)
    expected = [0.8 * (1 - (1 - k / 4) ** 3) for k in range(1, 5)]
    assert steps == pytest.approx(expected)
    assert steps[-1] == pytest.approx(0.8) and steps == sorted(steps)


def _silenced_reference(model: CNN, small: CNN, x: torch.Tensor) -> torch.Tensor:
    """The original network with every removed channel/neuron's output forced to zero."""
    for block, new_block in zip(model.features, small.features, strict=True):
        kept = _kept_rows(block.norm.weight, new_block.norm.weight)
        removed = torch.ones(len(block.norm.weight), dtype=torch.bool)
        removed[kept] = False
        block.norm.weight.data[removed] = 0
        block.norm.bias.data[removed] = 0  # relu(0) = 0 and max-pool of zeros is zero
    for block, new_block in zip(model.head, small.head, strict=True):
        kept = _kept_rows(block.linear.bias, new_block.linear.bias)
        removed = torch.ones(len(block.linear.bias), dtype=torch.bool)
        removed[kept] = False
        block.linear.weight.data[removed] = 0
        block.linear.bias.data[removed] = 0
    with torch.no_grad():
        return model(x)


def _kept_rows(old: torch.Tensor, new: torch.Tensor) -> list[int]:
    return [int((old == value).nonzero()[0]) for value in new]


def test_structured_cnn_equals_the_original_with_removed_units_silenced():
    model, cfg = _cnn(), CNNConfig(channels=[6, 8], head=[10])
    small_cfg = shrunk_config(cfg, 0.5)
    assert (small_cfg.channels, small_cfg.head) == ([3, 4], [5])
    small = CNN(small_cfg, input_shape=(1, 8, 8), num_outputs=4).eval()
    copy_kept(model, small)
    x = torch.randn(7, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = small(x)
    torch.testing.assert_close(got, _silenced_reference(model, small, x), rtol=1e-5, atol=1e-6)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


def test_structured_mlp_keeps_the_largest_neurons():
    torch.manual_seed(0)
    model = MLP(MLPConfig(hidden=[8]), in_features=5, num_outputs=2)
    small = MLP(shrunk_config(MLPConfig(hidden=[8]), 0.5), in_features=5, num_outputs=2)
    copy_kept(model, small)
    norms = model.blocks[0].linear.weight.norm(dim=1)
    kept = norms.topk(4).indices.sort().values
    torch.testing.assert_close(small.blocks[0].linear.weight, model.blocks[0].linear.weight[kept])
    torch.testing.assert_close(small.output.weight, model.output.weight[:, kept])
