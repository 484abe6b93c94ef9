"""Weight initialization for Linear / Conv / Embedding layers, chosen by ``model.init.name``.

Every scheme except ``default`` also zeroes biases; an Embedding's padding row is always
zero, so padded positions contribute nothing. Draws come from torch's global RNG, so the
same seed gives the same weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from scaletrain.config import InitConfig

InitFunction = Callable[[Tensor, InitConfig], None]

INITS: dict[str, InitFunction] = {}

# Layers whose weights an init scheme sets; norms keep their ones/zeros.
INIT_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)


def _register(name: str) -> Callable[[InitFunction], InitFunction]:
    def decorator(function: InitFunction) -> InitFunction:
        INITS[name] = function
        return function

    return decorator


@_register("default")
def _default(weight: Tensor, cfg: InitConfig) -> None:
    """PyTorch's own per-layer defaults (biases left as drawn)."""


@_register("zeros")
def _zeros(weight: Tensor, cfg: InitConfig) -> None:
    """All weights zero."""
    nn.init.zeros_(weight)


@_register("normal")
def _normal(weight: Tensor, cfg: InitConfig) -> None:
    """Normal(0, std)."""
    nn.init.normal_(weight, mean=0.0, std=cfg.std)


@_register("uniform")
def _uniform(weight: Tensor, cfg: InitConfig) -> None:
    """Uniform(-bound, bound)."""
    nn.init.uniform_(weight, -cfg.bound, cfg.bound)


@_register("xavier_uniform")
def _xavier_uniform(weight: Tensor, cfg: InitConfig) -> None:
    """Glorot uniform: bound = gain * sqrt(6 / (fan_in + fan_out))."""
    nn.init.xavier_uniform_(weight, gain=cfg.gain)


@_register("xavier_normal")
def _xavier_normal(weight: Tensor, cfg: InitConfig) -> None:
    """Glorot normal: std = gain * sqrt(2 / (fan_in + fan_out))."""
    nn.init.xavier_normal_(weight, gain=cfg.gain)


@_register("kaiming_uniform")
def _kaiming_uniform(weight: Tensor, cfg: InitConfig) -> None:
    """He uniform for ReLU: bound = sqrt(6 / fan_in)."""
    nn.init.kaiming_uniform_(weight, a=0.0, mode="fan_in", nonlinearity="relu")


@_register("kaiming_normal")
def _kaiming_normal(weight: Tensor, cfg: InitConfig) -> None:
    """He normal for ReLU: std = sqrt(2 / fan_in)."""
    nn.init.kaiming_normal_(weight, a=0.0, mode="fan_in", nonlinearity="relu")


@_register("orthogonal")
def _orthogonal(weight: Tensor, cfg: InitConfig) -> None:
    """(Semi-)orthogonal rows or columns scaled by gain (Saxe et al. 2014)."""
    nn.init.orthogonal_(weight, gain=cfg.gain)


def apply_init(model: nn.Module, cfg: InitConfig) -> None:
    """Initialize every Linear / Conv / Embedding weight of ``model`` as ``cfg`` says."""
    init_weight = INITS[cfg.name]
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, INIT_LAYER_TYPES):
                continue
            init_weight(module.weight, cfg)
            bias = getattr(module, "bias", None)
            if bias is not None and cfg.name != "default":
                nn.init.zeros_(bias)
            padding_idx = getattr(module, "padding_idx", None)
            if padding_idx is not None:
                module.weight[padding_idx].zero_()
