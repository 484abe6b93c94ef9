"""Structured pruning of a GPT's feed-forward layers: every block keeps the same number of
MLP hidden units (rows of w_in, and w_gate for SwiGLU; columns of w_out), the ones of
largest ||w_in row|| x ||w_gate row|| x ||w_out column|| in that block. Attention, norms,
embeddings and the head keep their shapes. The result is a normal `gpt` whose
`model.mlp_hidden` says the new width."""

from __future__ import annotations

import torch

from scaletrain.config import GPTConfig
from scaletrain.models.gpt import GPT, FeedForward, mlp_hidden


def shrunk_gpt_config(model_cfg: GPTConfig, fraction: float) -> GPTConfig:
    """`mlp_hidden` = round(hidden x (1 - fraction)), at least one unit."""
    kept = max(1, round(mlp_hidden(model_cfg) * (1 - fraction)))
    return model_cfg.model_copy(update={"mlp_hidden": kept})


def gpt_hidden_units(model_cfg: GPTConfig) -> list[int]:
    """Each block's MLP hidden width."""
    return [mlp_hidden(model_cfg)] * model_cfg.n_layer


def unit_scores(mlp: FeedForward) -> torch.Tensor:
    """(hidden,) how much each unit can move the residual stream: the L2 norms of the rows
    that make it (a GELU's input, SwiGLU's input and gate) times the column that reads it."""
    score = mlp.w_in.weight.detach().float().norm(dim=1)
    if mlp.w_gate is not None:
        score = score * mlp.w_gate.weight.detach().float().norm(dim=1)
    return score * mlp.w_out.weight.detach().float().norm(dim=0)


def kept_units(mlp: FeedForward, width: int) -> torch.Tensor:
    """Indices (ascending) of the `width` units of largest score."""
    return unit_scores(mlp).topk(width).indices.sort().values


def copy_kept_units(source: GPT, target: GPT) -> None:
    """`target` = `source` with each block's strongest MLP units; everything else whole
    (a tied head is the embedding, loaded once through either name)."""
    state = dict(source.state_dict())
    for index, (old, new) in enumerate(zip(source.blocks, target.blocks, strict=True)):
        keep = kept_units(old.mlp, new.mlp.w_in.out_features)
        prefix = f"blocks.{index}.mlp"
        for name in ("w_in", "w_gate"):
            layer = getattr(old.mlp, name)
            if layer is None:
                continue
            state[f"{prefix}.{name}.weight"] = layer.weight.detach()[keep]
            if layer.bias is not None:
                state[f"{prefix}.{name}.bias"] = layer.bias.detach()[keep]
        state[f"{prefix}.w_out.weight"] = old.mlp.w_out.weight.detach()[:, keep]
    with torch.no_grad():
        target.load_state_dict(state)
