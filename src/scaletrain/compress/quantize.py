"""Quantization of the linear layers with torchao, and its pickle-free file form: each
quantized weight's integer data and scales as plain safetensors tensors, put back into a
model quantized afresh with the same recipe (an exact round trip)."""

from __future__ import annotations

import logging

import torch
from torch import nn

from scaletrain.errors import UserError

MODES = ("int8-dynamic", "int8-weight", "int4-weight", "qat")
INT4_GROUP = 32  # int4 weights share a scale per 32 inputs where the width allows, else per row
_INT4_OFFSET = 8  # int4 values -8..7 stored as 0..15, two per byte


def torchao():
    """The torchao package, or one line saying how to get it."""
    logger = logging.getLogger("torchao")
    level = logger.level
    logger.setLevel(logging.ERROR)  # its optional GPU kernel libraries fail to load on a CPU
    try:
        import torchao.quantization as quantization
    except ImportError:
        raise UserError("--quantize: needs torchao (pip install 'scaletrain[compress]')") from None
    finally:
        logger.setLevel(level)
    return quantization


def quantize(model: nn.Module, mode: str) -> nn.Module:
    """Quantize `model`'s linear layers in place (`qat`: after fake-quantized fine-tuning,
    convert to the int8-dynamic form it was trained for)."""
    ao = torchao()
    if mode == "int4-weight":
        _quantize_int4(model, ao)
        return model
    if mode == "qat":
        from torchao.quantization.qat import QATConfig

        ao.quantize_(model, QATConfig(step="convert"))  # fake quantizers out, plain Linear back
    config = (
        ao.Int8WeightOnlyConfig()
        if mode == "int8-weight"
        else ao.Int8DynamicActivationInt8WeightConfig()
    )
    ao.quantize_(model, config)
    return model


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


def _quantize_int4(model: nn.Module, ao) -> None:
    # torchao's Int4WeightOnlyConfig needs a GPU kernel library (mslk); the unpacked int4
    # layout runs on any CPU
    def grouped(module: nn.Module, _name: str) -> bool:
        return isinstance(module, nn.Linear) and module.in_features % INT4_GROUP == 0

    def per_row(module: nn.Module, _name: str) -> bool:
        return isinstance(module, nn.Linear) and module.in_features % INT4_GROUP != 0

    recipe = {"weight_dtype": torch.int4}
    ao.quantize_(
        model, ao.IntxWeightOnlyConfig(**recipe, granularity=ao.PerGroup(INT4_GROUP)), grouped
    )
    ao.quantize_(model, ao.IntxWeightOnlyConfig(**recipe, granularity=ao.PerAxis(0)), per_row)


def quantized_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Plain tensors for safetensors (a quantized weight `w` as `w.qdata`, `w.scale`, …; int4
    data packed two per byte) and the names of the quantized weights."""
    tensors, quantized = {}, []
    for name, value in model.state_dict().items():
        parts = _parts(value)
        if parts is None:
            tensors[name] = value.detach().contiguous()
            continue
        quantized.append(name)
        for part, data in parts.items():
            packed = _pack_int4(data) if _is_int4(value) and part == "qdata" else data
            tensors[f"{name}.{part}"] = packed.detach().contiguous()
    return tensors, quantized


def load_quantized(model: nn.Module, mode: str, tensors: dict, quantized: list[str]) -> nn.Module:
    """The float `model` (compressed widths) quantized with `mode`, its plain tensors and
    every quantized weight's integer data and scales set from `tensors`."""
    plain = {name: value for name, value in tensors.items() if name in model.state_dict()}
    model.load_state_dict({**model.state_dict(), **plain})
    quantize(model, "int8-dynamic" if mode == "qat" else mode)
    for name in quantized:
        module_name, _, attribute = name.rpartition(".")
        weight = getattr(model.get_submodule(module_name), attribute)
        with torch.no_grad():
            for part, target in _parts(weight).items():
                saved = tensors[f"{name}.{part}"]
                if _is_int4(weight) and part == "qdata":
                    saved = _unpack_int4(saved, target.shape)
                target.copy_(saved)
    return model


def _parts(value: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """A torchao tensor's inner tensors by name; None for a plain tensor."""
    names = getattr(value, "tensor_data_names", None)
    if names is None:
        return None
    optional = getattr(value, "optional_tensor_data_names", None) or []
    parts = {name: getattr(value, name) for name in [*names, *optional]}
    return {name: part for name, part in parts.items() if part is not None}


def _is_int4(value: torch.Tensor) -> bool:
    return getattr(value, "target_dtype", None) == torch.int4


def _pack_int4(values: torch.Tensor) -> torch.Tensor:
    flat = (values.flatten().to(torch.int16) + _INT4_OFFSET).to(torch.uint8)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return flat[0::2] | (flat[1::2] << 4)


def _unpack_int4(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    low, high = packed & 0x0F, packed >> 4
    flat = torch.stack([low, high], dim=1).flatten()[: shape.numel()]
    return (flat.to(torch.int16) - _INT4_OFFSET).to(torch.int8).reshape(shape)
