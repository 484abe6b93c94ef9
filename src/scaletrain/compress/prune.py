"""Unstructured magnitude pruning over every trainable weight family: linear and conv
weights, embedding tables and recurrent (LSTM/GRU/RNN) weight matrices; biases and norms
stay dense. Masks are applied at once, so the model keeps plain parameters."""

from __future__ import annotations

import torch
from torch import nn

from scaletrain.errors import UserError
from scaletrain.parallel.mesh import placed_like

TARGETS = ("linear", "conv", "embedding", "recurrent")  # `--targets`; all by default
_FAMILIES: dict[str, tuple[type[nn.Module], ...]] = {
    "linear": (nn.Linear,),
    "conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d),
    "embedding": (nn.Embedding,),
    "recurrent": (nn.RNNBase,),
}


def prunable_parameters(model: nn.Module, targets=TARGETS) -> dict[str, nn.Parameter]:
    """name -> parameter of every weight pruning acts on, each once: a weight shared by two
    modules (a language model's tied embedding and head) appears under its first name."""
    families = tuple(cls for target in targets for cls in _FAMILIES[target])
    owners = {id(module) for module in model.modules() if isinstance(module, families)}
    found: dict[str, nn.Parameter] = {}
    for module_name, module in model.named_modules():
        if id(module) not in owners:
            continue
        for name, param in module.named_parameters(recurse=False):
            if _is_weight(module, name):
                found[f"{module_name}.{name}" if module_name else name] = param
    first_names = {id(param): name for name, param in model.named_parameters()}  # deduplicated
    return {first_names[id(param)]: param for param in found.values()}


def _is_weight(module: nn.Module, name: str) -> bool:
    if isinstance(module, nn.RNNBase):  # weight_ih_l0, weight_hh_l0_reverse, weight_hr_l0
        return name.startswith("weight_")
    return name == "weight"


def prune_unstructured(
    model: nn.Module, sparsity: float, *, scope: str, targets=TARGETS
) -> dict[str, torch.Tensor]:
    """Zero the smallest-magnitude weights in place, `round(sparsity x size)` of the targeted
    tensors in all, and return the masks (name -> bool, True = kept) that hold them at zero
    while fine-tuning. `layer`: that fraction of each tensor. `global`: each embedding table
    by the fraction on its own, and the layers' weights (linear, conv, recurrent) ranked
    together for the rest; weights already zero count towards the target (they rank first).

    Embeddings are kept out of the global ranking because their scale is unrelated to the
    layers' (textcnn-stdlib: rms 1.0 against 0.04-0.08): ranked together, 50 % removed every
    conv and linear weight and left 3 % test accuracy."""
    params = prunable_parameters(model, targets)
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    if scope == "global":
        groups = [[name] for name, param in params.items() if id(param) in tables]
        groups.append([name for name, param in params.items() if id(param) not in tables])
    else:
        groups = [[name] for name in params]
    masks: dict[str, torch.Tensor] = {}
    num_left = round(sparsity * sum(param.numel() for param in params.values()))
    with torch.no_grad():
        for index, names in enumerate(groups):
            group = [params[name] for name in names]
            size = sum(param.numel() for param in group)
            last = scope == "global" and index == len(groups) - 1  # takes the rounding rest
            num_pruned = min(size, max(0, num_left)) if last else round(sparsity * size)
            num_left -= num_pruned
            for name, mask in zip(names, _smallest_zeroed(group, num_pruned), strict=True):
                params[name].mul_(mask.to(params[name].dtype))
                masks[name] = mask
    return {name: masks[name] for name in params}


def _smallest_zeroed(params: list[nn.Parameter], num_pruned: int) -> list[torch.Tensor]:
    """Masks that drop exactly the `num_pruned` smallest |w| over `params` (ties broken by
    position), as torch.nn.utils.prune's L1 methods rank."""
    if not params:
        return []
    scores = torch.cat([param.detach().abs().flatten().float() for param in params])
    keep = torch.ones_like(scores, dtype=torch.bool)
    if num_pruned:
        keep[torch.topk(scores, num_pruned, largest=False).indices] = False
    parts = keep.split([param.numel() for param in params])
    return [part.view_as(param) for part, param in zip(parts, params, strict=True)]


def weight_masks(model: nn.Module, targets=TARGETS) -> dict[str, torch.Tensor]:
    """name -> bool mask of the nonzero entries of each prunable weight."""
    return {
        name: param.detach() != 0 for name, param in prunable_parameters(model, targets).items()
    }


def sparsity_of(model: nn.Module, targets=TARGETS) -> float:
    """Fraction of zeros among the targeted weights (each shared weight counted once)."""
    params = prunable_parameters(model, targets).values()
    total = sum(param.numel() for param in params)
    zeros = sum(int((param == 0).sum()) for param in params)
    return zeros / total if total else 0.0


def parse_targets(text: str | list | tuple) -> tuple[str, ...]:
    """`linear,conv` -> ("linear", "conv"), or one line naming `--targets`."""
    names = tuple(text.split(",")) if isinstance(text, str) else tuple(text)
    unknown = [name for name in names if name not in TARGETS]
    if unknown or not names:
        raise UserError(
            f"--targets: expected a comma-separated subset of {','.join(TARGETS)}, got {text!r}"
        )
    return names


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
        self._placed = {}
        for name, param in self._params(state).items():
            mask = self._placed[name] = placed_like(self.masks[name], param)
            param.register_hook(lambda grad, mask=mask: grad * mask)

    def on_step_end(self, state) -> None:
        with torch.no_grad():
            for name, param in self._params(state).items():
                param.mul_(self._placed[name])

    def _params(self, state) -> dict[str, nn.Parameter]:
        # a compiled model prefixes its names with `_orig_mod.`
        named = {n.replace("_orig_mod.", ""): p for n, p in state.model.named_parameters()}
        return {name: named[name] for name in self.masks}
