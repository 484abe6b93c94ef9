"""Analytic forward FLOPs per sample, for model FLOPs utilization (MFU).

Counts matrix products and convolutions only, as the MFU literature does (PaLM, nanoGPT):
2 * in * out per Linear output row, 2 * k * C_in/groups * C_out * output positions per
Conv1d/2d/3d, batched matmuls and attention likewise; elementwise ops, norms, pooling and
embedding lookups count zero. A training step costs about ``TRAIN_FLOPS_FACTOR`` times
the forward (the backward computes gradients for both inputs and weights: two products
per forward product).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

TRAIN_FLOPS_FACTOR = 3  # forward + backward (2x forward) per training sample


def count_flops_per_sample(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    input_dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
) -> int:
    """Forward FLOPs of one sample, counted at the operator level on a batch of one.

    Args:
        model: the unwrapped module (before DDP/FSDP/compile), on any device.
        input_shape: shape of one sample, without the batch dimension.
        input_dtype: ``torch.int64`` for token ids, else the float dtype of the inputs.
        device: where the forward runs: the model's device by default; ``"meta"`` runs it on
            meta copies of the parameters (no memory, no compute), which fails for a module
            that reads values (``.item()``, a branch on a tensor).
    """
    parameter = next(model.parameters(), None)
    home = parameter.device if parameter is not None else torch.device("cpu")
    device = torch.device(device) if device is not None else home
    # Zeros are valid token ids and images alike; the count does not depend on values.
    inputs = torch.zeros((1, *input_shape), dtype=input_dtype, device=device)
    forward = _on_meta(model) if device.type == "meta" and home.type != "meta" else model
    was_training = model.training
    # eval: BatchNorm cannot train on one sample, and its running stats must not move
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            forward(inputs)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def train_flops_per_sample(
    model: nn.Module, input_shape: tuple[int, ...], input_dtype: torch.dtype
) -> int | None:
    """Forward+backward FLOPs of one sample, or None where the model cannot be counted.

    A model with its own analytic count (``GPT.train_flops_per_sample``: 6N + 12·L·H·Q·T per
    token) is asked instead of counted, so the summary and MFU use one formula. Others are
    counted on meta copies first, as the model summary counts: no memory or compute, and a
    fused kernel the counter has no formula for (the CPU's or cuDNN's LSTM) runs there as its
    decomposition into counted products. Then on the model's device.
    """
    analytic = getattr(model, "train_flops_per_sample", None)
    if callable(analytic):
        return analytic(tuple(input_shape))
    for device in ("meta", None):
        try:
            forward = count_flops_per_sample(
                model, input_shape, input_dtype=input_dtype, device=device
            )
        except Exception:  # a user module the counter cannot trace: report no MFU, train anyway
            continue
        return TRAIN_FLOPS_FACTOR * forward or None
    return None


# modules whose forward is one or more matrix products (what bf16 makes faster)
PRODUCT_LAYERS = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd, nn.RNNBase)


def forward_flops_per_layer(
    model: nn.Module, input_shape: tuple[int, ...], input_dtype: torch.dtype
) -> float | None:
    """Forward FLOPs of one sample per product layer (Linear, conv, RNN): how large a model's
    matrix products are on average, which decides whether bf16 pays on a CPU
    (train/precision.py). None where the model cannot be counted."""
    total = train_flops_per_sample(model, input_shape, input_dtype)
    if not total:
        return None
    layers = sum(isinstance(module, PRODUCT_LAYERS) for module in model.modules())
    return total / TRAIN_FLOPS_FACTOR / max(layers, 1)


def _on_meta(model: nn.Module):
    """The model's forward with its parameters and buffers swapped for meta tensors."""
    tensors = {
        name: torch.empty_like(tensor, device="meta")
        for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers())
    }
    return lambda inputs: torch.func.functional_call(model, tensors, (inputs,))
