"""L1 / L2 / elastic-net penalties (``optim.penalty``): terms of the loss, applied as their
gradients.

Unlike ``optim.weight_decay`` (applied by the optimizer), a penalty is part of the loss, so
it shows in the gradient of every optimizer the same way: ``l1 * sign(w) + 2 * l2 * w``.
The trainer adds that closed form to the reduced gradients once per step
(``add_to_gradients``) instead of differentiating the term: no graph over every parameter,
and it works on any strategy's parameters, FSDP's sharded ones included, since each element's
gradient depends only on its own weight. The logged loss never includes the penalty.
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

    @torch.no_grad()
    def add_to_gradients(self) -> None:
        """``grad += l1 * sign(w) + 2 * l2 * w`` for every selected parameter (after the
        gradients were reduced and unscaled, before clipping); a missing grad counts as 0."""
        for param in self.params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            weight, grad = _local(param), _local(param.grad)
            if self.l1:
                grad.add_(weight.sign(), alpha=self.l1)
            if self.l2:
                grad.add_(weight, alpha=2 * self.l2)

    def _device(self) -> torch.device:
        return self.params[0].device if self.params else torch.device("cpu")


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (FSDP), else the tensor itself: element-wise, both agree."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if to_local is not None else tensor


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
