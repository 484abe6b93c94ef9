"""Gradient clipping (``optim.clip``) that also reports the gradient norm, without a host sync."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.nn.utils import clip_grad_norm_, clip_grad_value_, get_total_norm

from scaletrain.config import ClipConfig


def clip_gradients(cfg: ClipConfig, parameters: Iterable[torch.Tensor]) -> torch.Tensor:
    """Clip gradients in place; return their total 2-norm before clipping (a 0-dim tensor).

    The norm stays on the device: reading it (``float(norm)``) is a host sync, which the
    loop does only at log intervals. ``foreach`` kernels are used where the device has them.

    Args:
        cfg: the ``optim.clip`` config section (``none``: only measure the norm).
        parameters: the parameters whose ``.grad`` is clipped (those without one are skipped).
    """
    params = [param for param in parameters if param.grad is not None]
    if cfg.mode == "norm":
        return clip_grad_norm_(params, cfg.max, foreach=None)
    norm = get_total_norm([param.grad for param in params], foreach=None)
    if cfg.mode == "value":
        clip_grad_value_(params, cfg.max, foreach=None)
    return norm
