"""Activation checkpointing changes memory, not the result: gradients and BatchNorm running
statistics equal those of the same model without it (the recomputation in backward runs each
chosen block's forward a second time)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from scaletrain.config import CNNConfig, ResNetConfig
from scaletrain.models import MODELS, build_model
from scaletrain.parallel.blocks import apply_activation_checkpointing, find_blocks


@pytest.mark.parametrize(
    ("cfg", "input_shape"),
    [
        (ResNetConfig(width=4), (1, 8, 8)),
        (CNNConfig(channels=[4, 8], head=[16], batch_norm=True), (1, 8, 8)),
    ],
)
@pytest.mark.parametrize("mode", ["full", "every_n"])
def test_checkpointed_blocks_update_batch_norm_statistics_once(cfg, input_shape, mode):
    torch.manual_seed(0)
    plain = build_model(cfg, input_shape=input_shape, num_outputs=3).train()
    checkpointed = copy.deepcopy(plain)
    blocks = find_blocks(checkpointed, block_types=MODELS[cfg.name].block_types)
    assert apply_activation_checkpointing(blocks, mode=mode, every=2) > 0
    inputs, targets = torch.randn(6, *input_shape), torch.tensor([0, 1, 2, 0, 1, 2])
    for _ in range(2):  # two steps: a doubled update would compound
        for model in (plain, checkpointed):
            F.cross_entropy(model(inputs), targets).backward()
    for (name, expected), got in zip(
        plain.state_dict().items(), checkpointed.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(got, expected, rtol=0, atol=0, msg=name)
    for (name, expected), got in zip(
        plain.named_parameters(), checkpointed.parameters(), strict=True
    ):
        torch.testing.assert_close(got.grad, expected.grad, msg=name)
