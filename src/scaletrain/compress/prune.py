"""Unstructured magnitude pruning: masks from `torch.nn.utils.prune`, made permanent at once."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The (module, "weight") pairs magnitude pruning acts on: every linear and conv layer."""
    return [(module, "weight") for module in model.modules() if isinstance(module, PRUNABLE)]


def prune_unstructured(model: nn.Module, sparsity: float, *, scope: str) -> dict[str, torch.Tensor]:
    """Zero the smallest-magnitude weights in place (`global`: ranked across all layers;
    `layer`: the same fraction in each) and return the masks (name -> bool) that keep them
    zero during fine-tuning. Weights already zero count towards the target."""
    pairs = prunable_weights(model)
    if scope == "global":
        prune.global_unstructured(pairs, pruning_method=prune.L1Unstructured, amount=sparsity)
    else:
        for module, name in pairs:
            prune.l1_unstructured(module, name, amount=sparsity)
    for module, name in pairs:
        prune.remove(module, name)  # permanent: plain `weight` again, zeros in place
    return weight_masks(model)


def weight_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """name -> bool mask of the nonzero entries of each prunable weight."""
    names = {id(module): name for name, module in model.named_modules()}
    return {
        f"{names[id(module)]}.weight": module.weight.detach() != 0
        for module, _ in prunable_weights(model)
    }


def sparsity_of(model: nn.Module) -> float:
    """Fraction of zeros among the prunable weights."""
    weights = [module.weight.detach() for module, _ in prunable_weights(model)]
    total = sum(weight.numel() for weight in weights)
    zeros = sum(int((weight == 0).sum()) for weight in weights)
    return zeros / total if total else 0.0


def cubic_schedule(final: float, num_steps: int) -> list[float]:
    """Zhu & Gupta (2017): s_k = s_f (1 - (1 - k/K)^3), k = 1..K; fast early, slow late."""
    return [final * (1 - (1 - step / num_steps) ** 3) for step in range(1, num_steps + 1)]


class KeepMasks:
    """A training callback that keeps pruned weights at zero while fine-tuning: their
    gradients are masked (zero gradient, zero optimizer state: Adam, SGD and weight decay
    leave a zero weight at zero), and after each update they are zeroed again for any
    optimizer that would move them. Checkpoints and evaluations inside the loop (which run
    before `on_step_end`) therefore see the pruned weights; parameter names stay plain."""

    def __init__(self, masks: dict[str, torch.Tensor]):
        self.masks = masks

    def on_train_start(self, state) -> None:
        for name, param in self._params(state).items():
            mask = self.masks[name].to(param.device, param.dtype)
            param.register_hook(lambda grad, mask=mask: grad * mask)

    def on_step_end(self, state) -> None:
        with torch.no_grad():
            for name, param in self._params(state).items():
                param.mul_(self.masks[name].to(param.device, param.dtype))

    def _params(self, state) -> dict[str, nn.Parameter]:
        # a compiled model prefixes its names with `_orig_mod.`
        named = {n.replace("_orig_mod.", ""): p for n, p in state.model.named_parameters()}
        return {name: named[name] for name in self.masks}
