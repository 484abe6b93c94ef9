"""Quantization of the linear layers with torchao, and its pickle-free file form: each
quantized weight's integer data and scales as plain safetensors tensors, put back into a
model quantized afresh with the same recipe (an exact round trip)."""

from __future__ import annotations

import torch
from torch import nn

from scaletrain.trained.quantized import (
    INT4_OFFSET,
    MODES,
    is_int4,
    load_quantized,
    quantize,
    tensor_parts,
    torchao,
)

# the recipe and the reload live in trained/quantized.py (load_run needs them, below the api)
__all__ = [
    "MODES",
    "load_quantized",
    "prepare_qat",
    "quantize",
    "quantized_state",
]


def prepare_qat(model: nn.Module) -> nn.Module:
    """Fake quantization for int8-dynamic (per-token activations, symmetric per-row weights),
    so fine-tuning learns weights that survive the conversion. torchao's fake quantizer has
    no symmetric per-token mode: activations train asymmetric (a superset of the grid)."""
    ao = torchao()
    from torchao.quantization.qat import IntxFakeQuantizeConfig, QATConfig

    activations = IntxFakeQuantizeConfig(torch.int8, "per_token", is_symmetric=False)
    weights = IntxFakeQuantizeConfig(torch.int8, "per_channel")
    ao.quantize_(
        model, QATConfig(activation_config=activations, weight_config=weights, step="prepare")
    )
    return model


def quantized_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Plain tensors for safetensors (a quantized weight `w` as `w.qdata`, `w.scale`, …; int4
    data packed two per byte) and the names of the quantized weights."""
    tensors, quantized = {}, []
    for name, value in model.state_dict().items():
        parts = tensor_parts(value)
        if parts is None:
            tensors[name] = value.detach().contiguous()
            continue
        quantized.append(name)
        for part, data in parts.items():
            packed = _pack_int4(data) if is_int4(value) and part == "qdata" else data
            tensors[f"{name}.{part}"] = packed.detach().contiguous()
    return tensors, quantized


def _pack_int4(values: torch.Tensor) -> torch.Tensor:
    flat = (values.flatten().to(torch.int16) + INT4_OFFSET).to(torch.uint8)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return flat[0::2] | (flat[1::2] << 4)
