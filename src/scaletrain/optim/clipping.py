"""Gradient clipping (``optim.clip``) that also reports the gradient norm, without a host sync."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.nn.utils import clip_grad_norm_, clip_grad_value_, clip_grads_with_norm_, get_total_norm

from scaletrain.config import ClipConfig


def clip_gradients(
    cfg: ClipConfig,
    parameters: Iterable[torch.Tensor],
    *,
    reduce_norm: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Clip gradients in place; return their total 2-norm before clipping (a 0-dim tensor).

    The norm stays on the device: reading it (``float(norm)``) is a host sync, which the
    loop does only at log intervals. ``foreach`` kernels are used where the device has them.

    Args:
        cfg: the ``optim.clip`` config section (``none``: only measure the norm).
        parameters: the parameters whose ``.grad`` is clipped (those without one are skipped).
        reduce_norm: this process's norm -> the model's, where processes hold different
            parameters (pipeline stages: a collective); None: the local norm is the total.
    """
    params = [param for param in parameters if param.grad is not None]
    if cfg.mode == "norm" and reduce_norm is None:
        return clip_grad_norm_(params, cfg.max, foreach=None)
    grads = [param.grad for param in params]
    norm = _plain_total_norm(grads)
    if norm is None:  # mixed devices or dtypes, or DTensors: torch's general version
        norm = get_total_norm(grads, foreach=None)
    if reduce_norm is not None:
        norm = reduce_norm(norm)
    if cfg.mode == "norm":
        clip_grads_with_norm_(params, cfg.max, norm, foreach=None)
    elif cfg.mode == "value":
        clip_grad_value_(params, cfg.max, foreach=None)
    return norm


def _plain_total_norm(grads: list[torch.Tensor]) -> torch.Tensor | None:
    """The common case, one device and dtype of plain tensors, in two kernels: the per-step
    cost of torch's grouping by device and dtype is larger than the norms of a small model."""
    if not grads:
        return None
    first = grads[0]
    if not all(
        type(grad) is torch.Tensor and grad.device == first.device and grad.dtype == first.dtype
        for grad in grads
    ):
        return None
    if first.device.type not in ("cpu", "cuda"):
        return None
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)


def gradient_sum(parameters: Iterable[torch.Tensor]) -> torch.Tensor:
    """The sum of every gradient element on this process (FSDP: of its local shards), a
    0-dim tensor that is non-finite exactly when some element is (or the sum overflows,
    at magnitudes no useful gradient has).

    A finiteness probe for steps that need no norm: one read of the gradients, about half
    the time of the 2-norm on large tensors (no squares, no square root).
    """
    sums = []
    for param in parameters:
        grad = param.grad
        if grad is None:
            continue
        to_local = getattr(grad, "to_local", None)  # DTensor: this rank's shard
        sums.append((to_local() if to_local is not None else grad).sum(dtype=torch.float32))
    if not sums:
        return torch.zeros(())
    return torch.stack(sums).sum()
