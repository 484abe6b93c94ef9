"""Structured textcnn pruning: a normal, smaller textcnn that computes what the original
does with the removed filters silenced; filters ranked by L1 norm within each branch."""

from __future__ import annotations

import pytest
import torch

from scaletrain.compress.shrink import channel_fraction, check_shrinkable, copy_kept, shrunk_config
from scaletrain.config import TextCNNConfig
from scaletrain.config.models import UserModelConfig
from scaletrain.errors import UserError
from scaletrain.models.textcnn import TextCNN


def _pair(hidden: int) -> tuple[TextCNN, TextCNN]:
    torch.manual_seed(0)
    cfg = TextCNNConfig(embed_dim=6, num_filters=8, kernel_sizes=[1, 2, 3], hidden=hidden)
    model = TextCNN(cfg, vocab_size=25, num_outputs=4).eval()
    for block in model.blocks:  # distinct biases, so a wrongly paired filter shows
        block.conv.bias.data.uniform_(-0.3, 0.3)
    small_cfg = shrunk_config(cfg, 0.5)
    assert small_cfg.num_filters == 4 and small_cfg.kernel_sizes == cfg.kernel_sizes
    assert channel_fraction(cfg, small_cfg) == 0.5
    return model, TextCNN(small_cfg, vocab_size=25, num_outputs=4).eval()


def _silenced(model: TextCNN, kept: list[torch.Tensor]) -> None:
    """Zero each removed filter: relu(0) = 0, its max over time 0, so it adds nothing."""
    for block, keep in zip(model.blocks, kept, strict=True):
        removed = torch.ones(block.conv.out_channels, dtype=torch.bool)
        removed[keep] = False
        block.conv.weight.data[removed] = 0
        block.conv.bias.data[removed] = 0


@pytest.mark.parametrize("hidden", [0, 5])
def test_shrunk_textcnn_equals_the_original_with_removed_filters_silenced(hidden):
    model, small = _pair(hidden)
    kept = [
        block.conv.weight.abs().flatten(1).sum(1).topk(4).indices.sort().values
        for block in model.blocks
    ]
    copy_kept(model, small)
    for block, new, keep in zip(model.blocks, small.blocks, kept, strict=True):
        assert torch.equal(new.conv.weight, block.conv.weight[keep])  # the largest L1 norms
    tokens = torch.randint(0, 25, (5, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = small(tokens)
        _silenced(model, kept)
        expected = model(tokens)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


def test_a_model_without_config_widths_is_refused_in_one_line():
    with pytest.raises(UserError, match=r"^--structured: .* got model.name: user; use"):
        check_shrinkable(UserModelConfig(class_name="MyNet"))
