"""Optimizers from ``cfg.optim``: a plain-dict registry, weight-decay groups and the kernel choice.

``build_optimizer`` is the only reader of ``optim.lr``; the schedule is a multiplier on it.
With ``weight_decay > 0`` the trainable parameters split into two groups, ``decay`` and
``no_decay`` (biases and norm-layer parameters, which decay would only pull towards zero
for no regularizing benefit); each group keeps ``model.parameters()`` order.

``implementation: auto`` takes torch's fused kernel (one kernel for all parameters) where
torch has one for this optimizer and every parameter's device, else the ``foreach`` kernels
(one launch per op over a list of tensors); ``loop`` is the per-parameter reference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from scaletrain.config import OptimConfig
from scaletrain.errors import ConfigError
from scaletrain.optim.params import bias_and_norm_ids, trainable_parameters

# builder(cfg, param_groups, kernel) -> optimizer; kernel holds the fused/foreach flags.
OptimizerBuilder = Callable[[OptimConfig, list[dict], dict[str, bool]], torch.optim.Optimizer]
OPTIMIZERS: dict[str, OptimizerBuilder] = {}

# Device types (of those train.device offers) with a fused kernel per optimizer, torch >= 2.6.
# RMSprop has none; fused Adagrad is CPU-only (torch 2.11 refuses it on CUDA at the first step).
FUSED_DEVICES: dict[str, tuple[str, ...]] = {
    "sgd": ("cpu", "cuda"),
    "adam": ("cpu", "cuda"),
    "adamw": ("cpu", "cuda"),
    "adagrad": ("cpu",),
}
# Fused kernels with a DTensor sharding rule (FSDP's parameter shards), torch 2.13: fused SGD
# and Adagrad fail at the first step ("does not have a sharding strategy registered").
FUSED_ON_SHARDS = ("adam", "adamw")
# Fused kernels that are wrong for bf16/fp16 parameters (train.precision: bf16-true), per
# device type: torch 2.12-2.13's CPU SGD leaves every full SIMD block of such a tensor unchanged
# (pytorch/pytorch#191763), so the model silently stops learning.
FUSED_WRONG_IN_LOW_PRECISION: dict[str, tuple[str, ...]] = {"sgd": ("cpu",)}
LOW_PRECISION = (torch.bfloat16, torch.float16)


def register_optimizer(name: str) -> Callable[[OptimizerBuilder], OptimizerBuilder]:
    """Add a builder under ``optim.name: name`` (its docstring is its description)."""

    def decorator(builder: OptimizerBuilder) -> OptimizerBuilder:
        assert name not in OPTIMIZERS, f"optimizer {name!r} registered twice"
        OPTIMIZERS[name] = builder
        return builder

    return decorator


@register_optimizer("sgd")
def _sgd(cfg: OptimConfig, groups: list[dict], kernel: dict[str, bool]) -> torch.optim.Optimizer:
    """SGD with optional (Nesterov) momentum; weight decay is coupled (L2 in the gradient)."""
    return torch.optim.SGD(
        groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, **kernel
    )


@register_optimizer("adam")
def _adam(cfg: OptimConfig, groups: list[dict], kernel: dict[str, bool]) -> torch.optim.Optimizer:
    """Adam; weight decay is coupled (added to the gradient before the moments)."""
    return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, **kernel)


@register_optimizer("adamw")
def _adamw(cfg: OptimConfig, groups: list[dict], kernel: dict[str, bool]) -> torch.optim.Optimizer:
    """AdamW: Adam with decoupled weight decay (shrinks weights by lr * weight_decay)."""
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, **kernel)


@register_optimizer("rmsprop")
def _rmsprop(
    cfg: OptimConfig, groups: list[dict], kernel: dict[str, bool]
) -> torch.optim.Optimizer:
    """RMSprop with smoothing ``alpha`` and optional momentum; coupled weight decay."""
    return torch.optim.RMSprop(
        groups, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum, **kernel
    )


@register_optimizer("adagrad")
def _adagrad(
    cfg: OptimConfig, groups: list[dict], kernel: dict[str, bool]
) -> torch.optim.Optimizer:
    """Adagrad; coupled weight decay."""
    return torch.optim.Adagrad(groups, lr=cfg.lr, eps=cfg.eps, **kernel)


def build_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Build the optimizer named by ``cfg.name`` over the model's trainable parameters.

    Args:
        cfg: the ``optim`` config section.
        model: the (possibly wrapped) module whose trainable parameters are optimized.
    """
    groups = build_param_groups(model, weight_decay=cfg.weight_decay)
    params = [param for group in groups for param in group["params"]]
    kernel = choose_kernel(cfg.name, cfg.implementation, params)
    return OPTIMIZERS[cfg.name](cfg, groups, kernel)


def build_param_groups(model: nn.Module, *, weight_decay: float) -> list[dict]:
    """One group without decay, or ``decay`` / ``no_decay`` (biases, norms); empty ones dropped."""
    params = trainable_parameters(model)
    if weight_decay == 0:
        return [{"name": "all", "params": params, "weight_decay": 0.0}]
    exempt = bias_and_norm_ids(model)
    groups = [
        {
            "name": "decay",
            "params": [param for param in params if id(param) not in exempt],
            "weight_decay": weight_decay,
        },
        {
            "name": "no_decay",
            "params": [param for param in params if id(param) in exempt],
            "weight_decay": 0.0,
        },
    ]
    return [group for group in groups if group["params"]]


def choose_kernel(name: str, implementation: str, params: list[torch.Tensor]) -> dict[str, bool]:
    """The ``fused``/``foreach`` keyword arguments for ``optim.implementation``."""
    kinds = {(p.device.type, p.dtype, _is_shard(p)) for p in params}
    fusable = all(_fusable(name, *kind) for kind in kinds)
    if implementation == "auto":
        return {"fused": True} if fusable else {"foreach": True}
    if implementation == "fused":
        _refuse_unfusable(name, kinds)
        return {"fused": True}
    if implementation == "foreach":
        return {"foreach": True}
    return {"foreach": False}  # loop: one parameter at a time, the reference implementation


def check_implementation(
    cfg: OptimConfig, *, device_type: str, param_dtype: torch.dtype, sharded: bool
) -> None:
    """Refuse a forced `optim.implementation: fused` that torch cannot honour, before the
    run starts (the parameters' device, dtype and sharding are known from the config)."""
    if cfg.implementation == "fused":
        _refuse_unfusable(cfg.name, {(device_type, param_dtype, sharded)})


def _refuse_unfusable(name: str, kinds: set[tuple[str, torch.dtype, bool]]) -> None:
    for device_type, dtype, sharded in kinds:
        if _fusable(name, device_type, dtype, sharded):
            continue
        where = (
            f"parameters on {device_type} (it has: {list(FUSED_DEVICES.get(name, ())) or 'none'})"
        )
        if sharded and device_type in FUSED_DEVICES.get(name, ()):
            where = f"FSDP-sharded parameters (it has: {', '.join(FUSED_ON_SHARDS)})"
        if _wrong_in_low_precision(name, device_type, dtype):
            where = f"bf16/fp16 parameters on {device_type} (the one it has skips updates)"
        raise ConfigError(
            f"optim.implementation: torch has no fused {name} for {where}; use `auto` or `foreach`"
        )


def _fusable(name: str, device_type: str, dtype: torch.dtype, sharded: bool) -> bool:
    """Whether torch has a correct fused `name` kernel for such parameters."""
    return (
        device_type in FUSED_DEVICES.get(name, ())
        and dtype.is_floating_point
        and (name in FUSED_ON_SHARDS or not sharded)
        and not _wrong_in_low_precision(name, device_type, dtype)
    )


def _wrong_in_low_precision(name: str, device_type: str, dtype: torch.dtype) -> bool:
    return dtype in LOW_PRECISION and device_type in FUSED_WRONG_IN_LOW_PRECISION.get(name, ())


def _is_shard(param: torch.Tensor) -> bool:
    """A DTensor (FSDP's parameter shard), told apart without importing torch.distributed."""
    return hasattr(param, "to_local")
