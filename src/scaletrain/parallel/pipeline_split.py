"""How a GPT is cut into pipeline stages, keeping the full model's parameter names.

Rule: the layers are split evenly by count (the first `n_layer % stages` stages take one
more); the first stage also holds the token (and position) embedding, the last one the
final norm and the head. With `stages_per_rank` > 1 rank r holds stages r, r + size, ...
(the loop order `interleaved_1f1b` expects).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from scaletrain.errors import UserError

_PARTS = ("tok_emb", "blocks", "norm", "head")


def layer_split(num_layers: int, num_stages: int) -> list[range]:
    """Layer indices of each stage: contiguous, sizes differing by at most one."""
    base, extra = divmod(num_layers, num_stages)
    bounds = [0]
    for stage in range(num_stages):
        bounds.append(bounds[-1] + base + (stage < extra))
    return [range(start, stop) for start, stop in zip(bounds, bounds[1:], strict=False)]


def stage_ids(rank: int, size: int, stages_per_rank: int) -> list[int]:
    """The stages pipeline rank `rank` runs, in order."""
    return [rank + size * round_ for round_ in range(stages_per_rank)]


def check_layout(model: nn.Module) -> None:
    """A module the splitter understands: GPT's parts, no tying."""
    missing = [part for part in _PARTS if not hasattr(model, part)]
    if missing or not isinstance(model.blocks, nn.ModuleList):
        raise UserError(
            f"parallel.strategy=pp: {type(model).__name__} lacks the GPT layout "
            f"({', '.join(missing) or 'blocks as an nn.ModuleList'}); pipeline stages are cut "
            "from tok_emb, blocks[i], norm and head"
        )
    if model.head.weight is model.tok_emb.weight:
        raise UserError(
            "parallel.strategy=pp: the head shares the embedding's weight, which lives on "
            "another stage; untie them (model.tie_weights=false)"
        )


class StageModule(nn.Module):
    """The parts of a GPT that one stage (or one rank's stages) runs, registered under the
    full model's names (`blocks.3.attn.q_proj.weight`), so DCP checkpoints reshard between
    layouts. Its forward is the training path of `GPT.forward` (no KV cache); a sequence
    classifier's last stage pools with the token ids every stage receives as a keyword (the
    schedule passes `step`'s kwargs, split by piece, to each stage's forward)."""

    def __init__(self, model: nn.Module, layers: Sequence[int], *, first: bool, last: bool):
        super().__init__()
        self.tok_emb = model.tok_emb if first else None
        self.pos_emb = getattr(model, "pos_emb", None) if first else None
        self.drop = getattr(model, "drop", None) if first else None
        self.blocks = nn.ModuleDict({str(layer): model.blocks[layer] for layer in layers})
        self.norm = model.norm if last else None
        self.head = model.head if last else None
        # a bound method, not a submodule: the GPT's padding rule, none of its parameters
        classifies = last and getattr(model, "task", "language_model") != "language_model"
        self.pool = model.pool_tokens if classifies else None

    def forward(self, x: torch.Tensor, token_ids: torch.Tensor | None = None) -> torch.Tensor:
        if self.tok_emb is not None:  # token ids (B, T) -> (B, T, C)
            tokens = x
            x = self.tok_emb(tokens)
            if self.pos_emb is not None:
                x = x + self.pos_emb(torch.arange(tokens.shape[1], device=x.device))
            if self.drop is not None:
                x = self.drop(x)
        for block in self.blocks.values():
            x = block(x)
        if self.head is None:
            return x
        x = self.norm(x)
        if self.pool is not None:
            x = self.pool(x, token_ids)  # (B, C), the first stage's token ids
        return self.head(x)  # (B, T, vocab) or (B, num_outputs)
