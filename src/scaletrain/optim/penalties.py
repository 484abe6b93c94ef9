"""L1 / L2 / elastic-net penalties added to the loss (``optim.penalty``).

Unlike ``optim.weight_decay`` (applied by the optimizer), a penalty is part of the loss, so
it shows in the gradient of every optimizer the same way: ``l1 * sign(w) + 2 * l2 * w``.
"""

from __future__ import annotations

import torch
from torch import nn

from scaletrain.config import PenaltyConfig
from scaletrain.optim.params import bias_and_norm_ids, trainable_parameters


class Penalty:
    """``l1 * sum|w| + l2 * sum w^2`` over the selected parameters, as a scalar tensor."""

    def __init__(self, *, l1: float, l2: float, params: list[nn.Parameter]) -> None:
        self.l1 = l1
        self.l2 = l2
        self.params = params

    def __call__(self) -> torch.Tensor:
        # One reduction per parameter and term; bf16/fp16 weights are upcast to float32 first.
        terms = []
        if self.l1:
            terms += [self.l1 * _upcast(param).abs().sum() for param in self.params]
        if self.l2:
            terms += [self.l2 * _upcast(param).square().sum() for param in self.params]
        if not terms:
            return torch.zeros((), device=self._device())
        return torch.stack(terms).sum()

    def _device(self) -> torch.device:
        return self.params[0].device if self.params else torch.device("cpu")


def _upcast(param: torch.Tensor) -> torch.Tensor:
    return param.to(torch.promote_types(param.dtype, torch.float32))  # no copy for fp32/fp64


def build_penalty(cfg: PenaltyConfig, model: nn.Module) -> Penalty | None:
    """The penalty over trainable weights (biases and norms too if asked); None when off.

    Args:
        cfg: the ``optim.penalty`` config section.
        model: the module whose parameters are penalized.
    """
    if cfg.l1 == 0 and cfg.l2 == 0:
        return None  # nothing to add: the loop skips the call entirely
    params = trainable_parameters(model)
    if not cfg.include_bias_and_norm:
        exempt = bias_and_norm_ids(model)
        params = [param for param in params if id(param) not in exempt]
    return Penalty(l1=cfg.l1, l2=cfg.l2, params=params)
