"""Structured pruning that shrinks the layers: whole neurons/filters removed, a smaller
built-in model (new widths in its config) filled with the kept slices (mlp and cnn here,
textcnn in `shrink_textcnn`, resnet's inner block channels in `shrink_resnet`, gpt's MLP
hidden units in `shrink_gpt`, rnn's hidden units in `shrink_rnn`)."""

from __future__ import annotations

import math

import torch
from torch import nn

from scaletrain.compress.shrink_gpt import copy_kept_units, gpt_hidden_units, shrunk_gpt_config
from scaletrain.compress.shrink_resnet import (
    copy_kept_channels,
    inner_channels,
    shrunk_resnet_config,
)
from scaletrain.compress.shrink_rnn import copy_kept_hidden, rnn_hidden_units, shrunk_rnn_config
from scaletrain.compress.shrink_textcnn import copy_kept_filters, shrunk_textcnn_config
from scaletrain.config import CNNConfig, GPTConfig, MLPConfig, ResNetConfig, TextCNNConfig
from scaletrain.config.models import RNNConfig
from scaletrain.errors import UserError
from scaletrain.models.cnn import CNN
from scaletrain.models.gpt import GPT
from scaletrain.models.mlp import MLP
from scaletrain.models.resnet import ResNet
from scaletrain.models.rnn import RNN
from scaletrain.models.textcnn import TextCNN

Layer = tuple[nn.Module, nn.Module | None]  # (linear or conv, its BatchNorm or None)
SHRINKABLE = (MLPConfig, CNNConfig, TextCNNConfig, ResNetConfig, GPTConfig, RNNConfig)


def check_shrinkable(model_cfg) -> None:
    """Only the models whose widths are config lists can be rebuilt smaller."""
    if not isinstance(model_cfg, SHRINKABLE):
        raise UserError(
            f"--structured: shrinks the built-in mlp, cnn, textcnn, resnet, gpt and rnn models "
            f"(widths in the config), got model.name: {model_cfg.name}; use unstructured "
            f"pruning (drop --structured)"
        )


def shrunk_config(model_cfg, fraction: float):
    """The model config with each hidden width cut by `fraction` (at least one kept)."""

    def keep(widths: list[int]) -> list[int]:
        return [max(1, round(width * (1 - fraction))) for width in widths]

    if isinstance(model_cfg, MLPConfig):
        return model_cfg.model_copy(update={"hidden": keep(model_cfg.hidden)})
    if isinstance(model_cfg, TextCNNConfig):
        return shrunk_textcnn_config(model_cfg, fraction)
    if isinstance(model_cfg, ResNetConfig):
        return shrunk_resnet_config(model_cfg, fraction)
    if isinstance(model_cfg, GPTConfig):
        return shrunk_gpt_config(model_cfg, fraction)
    if isinstance(model_cfg, RNNConfig):
        return shrunk_rnn_config(model_cfg, fraction)
    return model_cfg.model_copy(
        update={"channels": keep(model_cfg.channels), "head": keep(model_cfg.head)}
    )


# the families whose shrinking has its own module; mlp and cnn are handled below
_FAMILY_COPIES = {
    TextCNN: copy_kept_filters,
    ResNet: copy_kept_channels,
    GPT: copy_kept_units,
    RNN: copy_kept_hidden,
}


def copy_kept(source: nn.Module, target: nn.Module) -> None:
    """Fill `target` (the shrunk model) with the strongest neurons/filters of `source`:
    ranked by |BatchNorm scale| where a norm follows (it sets the output's size), else by the
    L2 norm of the weight row; the next layer keeps the matching input slices."""
    for family, copy_family in _FAMILY_COPIES.items():
        if isinstance(target, family):
            copy_family(source, target)
            return
    old, new = _layers(source), _layers(target)
    kept_inputs: torch.Tensor | None = None
    previous: nn.Module | None = None
    for (old_layer, old_norm), (new_layer, new_norm) in zip(old, new, strict=True):
        keep = _strongest(old_layer, old_norm, new_layer.weight.shape[0])
        flattened = isinstance(previous, nn.Conv2d) and isinstance(old_layer, nn.Linear)
        if flattened:  # the conv's (C, H, W) map was flattened: C's H*W features go together
            spatial = old_layer.weight.shape[1] // previous.weight.shape[0]
            offsets = torch.arange(spatial)
            kept_inputs = (kept_inputs[:, None] * spatial + offsets[None, :]).flatten()
        _copy_layer(old_layer, new_layer, keep, kept_inputs)
        if old_norm is not None:
            _copy_norm(old_norm, new_norm, keep)
        kept_inputs, previous = keep, old_layer


def _layers(model: nn.Module) -> list[Layer]:
    if isinstance(model, MLP):
        blocks = [(block.linear, _norm(block.norm)) for block in model.blocks]
    elif isinstance(model, CNN):
        blocks = [(block.conv, _norm(block.norm)) for block in model.features]
        blocks += [(block.linear, _norm(block.norm)) for block in model.head]
    else:
        raise AssertionError(f"not a shrinkable model: {type(model).__name__}")
    return [*blocks, (model.output, None)]


def _norm(module: nn.Module) -> nn.Module | None:
    return module if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d) else None


def _strongest(layer: nn.Module, norm: nn.Module | None, width: int) -> torch.Tensor:
    """Indices (ascending) of the `width` output channels that matter most."""
    if width == layer.weight.shape[0]:
        return torch.arange(width)
    if norm is not None:
        score = norm.weight.detach().abs()
    else:
        score = layer.weight.detach().flatten(1).norm(dim=1)
    return score.topk(width).indices.sort().values


def _copy_layer(old: nn.Module, new: nn.Module, keep: torch.Tensor, inputs) -> None:
    with torch.no_grad():
        weight = old.weight.detach()[keep]
        if inputs is not None:
            weight = weight[:, inputs]
        new.weight.copy_(weight)
        if old.bias is not None:
            new.bias.copy_(old.bias.detach()[keep])


def _copy_norm(old: nn.Module, new: nn.Module, keep: torch.Tensor) -> None:
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(new, name).copy_(getattr(old, name).detach()[keep])
        new.num_batches_tracked.copy_(old.num_batches_tracked)


def channel_fraction(old_cfg, new_cfg) -> float:
    """Fraction of hidden neurons/filters removed (what `--prune` asked, after rounding)."""
    before, after = math.fsum(_widths(old_cfg)), math.fsum(_widths(new_cfg))
    return 1 - after / before if before else 0.0


def _widths(model_cfg) -> list[int]:
    if isinstance(model_cfg, MLPConfig):
        return model_cfg.hidden
    if isinstance(model_cfg, TextCNNConfig):
        return [model_cfg.num_filters * len(model_cfg.kernel_sizes)]
    if isinstance(model_cfg, ResNetConfig):
        return inner_channels(model_cfg)
    if isinstance(model_cfg, GPTConfig):
        return gpt_hidden_units(model_cfg)
    if isinstance(model_cfg, RNNConfig):
        return rnn_hidden_units(model_cfg)
    return [*model_cfg.channels, *model_cfg.head]
