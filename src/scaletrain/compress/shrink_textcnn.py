"""Structured pruning of a text CNN: each kernel width's branch keeps its filters of largest
L1 norm, and the layer reading the pooled features keeps the matching input columns; the
result is a normal `textcnn` with a smaller `model.num_filters`."""

from __future__ import annotations

import torch

from scaletrain.config import TextCNNConfig
from scaletrain.models.textcnn import TextCNN


def shrunk_textcnn_config(model_cfg: TextCNNConfig, fraction: float) -> TextCNNConfig:
    """`num_filters` cut by `fraction` in every branch (at least one kept)."""
    return model_cfg.model_copy(
        update={"num_filters": max(1, round(model_cfg.num_filters * (1 - fraction)))}
    )


def copy_kept_filters(source: TextCNN, target: TextCNN) -> None:
    """Fill `target` with `source`'s strongest filters per branch (ranked by the L1 norm of
    their weights, as Li et al. 2017 rank conv filters), the embedding as it is, and the
    next linear layer's columns for the kept filters (pooled features are concatenated
    branch after branch)."""
    old_width = source.blocks[0].conv.out_channels
    new_width = target.blocks[0].conv.out_channels
    columns = []
    with torch.no_grad():
        target.embedding.weight.copy_(source.embedding.weight)
        for index, (old, new) in enumerate(zip(source.blocks, target.blocks, strict=True)):
            keep = _strongest_filters(old.conv.weight, new_width)
            new.conv.weight.copy_(old.conv.weight[keep])
            new.conv.bias.copy_(old.conv.bias[keep])
            columns.append(index * old_width + keep)
        kept = torch.cat(columns)
        first = source.hidden[0] if isinstance(source.hidden, torch.nn.Sequential) else None
        reader = first if first is not None else source.output
        new_reader = target.hidden[0] if first is not None else target.output
        new_reader.weight.copy_(reader.weight[:, kept])
        new_reader.bias.copy_(reader.bias)
        if first is not None:
            target.output.load_state_dict(source.output.state_dict())


def _strongest_filters(weight: torch.Tensor, width: int) -> torch.Tensor:
    """Indices (ascending) of the `width` filters with the largest sum of |w|."""
    score = weight.detach().abs().flatten(1).sum(dim=1)
    return score.topk(width).indices.sort().values
