"""Structured pruning of a ResNet inside its basic blocks only: each block's inner channels
(conv1's outputs, bn1, conv2's inputs) keep those of largest |bn1 scale|; block outputs,
shortcuts and the residual stream keep their shapes. The result is a normal `resnet` with
`model.inner_keep` < 1."""

from __future__ import annotations

import torch

from scaletrain.config import ResNetConfig
from scaletrain.models.resnet import STAGE_BLOCKS, BasicBlock, ResNet, inner_width


def shrunk_resnet_config(model_cfg: ResNetConfig, fraction: float) -> ResNetConfig:
    """`inner_keep` cut by `fraction` (of the source's inner channels)."""
    return model_cfg.model_copy(update={"inner_keep": model_cfg.inner_keep * (1 - fraction)})


def inner_channels(model_cfg: ResNetConfig) -> list[int]:
    """Each basic block's inner width, stage by stage."""
    return [
        inner_width(model_cfg.width * 2**index, model_cfg.inner_keep)
        for index, num_blocks in enumerate(STAGE_BLOCKS[model_cfg.depth])
        for _ in range(num_blocks)
    ]


def copy_kept_channels(source: ResNet, target: ResNet) -> None:
    """`target` = `source` with each block's strongest inner channels: ranked by |bn1 scale|
    (it sets the channel's size after normalization); everything else copied whole."""
    state = dict(source.state_dict())
    old_blocks = [m for m in source.modules() if isinstance(m, BasicBlock)]
    new_blocks = [m for m in target.modules() if isinstance(m, BasicBlock)]
    names = {id(module): name for name, module in source.named_modules()}
    for old, new in zip(old_blocks, new_blocks, strict=True):
        keep = old.bn1.weight.detach().abs().topk(new.bn1.num_features).indices.sort().values
        prefix = names[id(old)]
        state[f"{prefix}.conv1.weight"] = old.conv1.weight.detach()[keep]
        for key in ("weight", "bias", "running_mean", "running_var"):
            state[f"{prefix}.bn1.{key}"] = getattr(old.bn1, key).detach()[keep]
        state[f"{prefix}.conv2.weight"] = old.conv2.weight.detach()[:, keep]
    with torch.no_grad():
        target.load_state_dict(state)
