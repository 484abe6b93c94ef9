"""The ONNX form of torchao's int8-dynamic linear layers (`--quantize int8-dynamic`, `qat`).

torchao keeps such a weight as a tensor subclass whose matmul is `aten._int_mm`, for which
torch 2.13's exporters have no ONNX op. `Int8DynamicLinear` does torchao's arithmetic
(`Int8Tensor`'s linear, symmetric per-token activations, int32 accumulation, then the
activation scale, the weight's per-row scale and the bias, in that order) with plain ops
and `torch._int_mm`, which the exporters here translate to ONNX `MatMulInteger`: the graph
keeps the weights as int8 initializers, accumulates in int32 exactly at any width, and
onnxruntime runs its u8 x s8 kernel (activations shifted by 128, zero point 128).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

QUANT_MIN, QUANT_MAX = -128, 127
HALF_RANGE = (QUANT_MAX - QUANT_MIN) / 2  # 127.5: torchao's symmetric scale divisor
EPS = torch.finfo(torch.float32).eps  # torchao's smallest scale (an all-zero token)
SHIFT = 128  # int8 -> uint8 for onnxruntime's u8 x s8 MatMulInteger kernel


class Int8DynamicLinear(nn.Module):
    """A torchao int8-dynamic `nn.Linear` as plain tensors: int8 weight (N, K), its per-row
    float32 scale (N,) and the float bias."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight
        self.register_buffer("qdata", weight.qdata.detach().clone())  # (N, K) int8
        self.register_buffer("weight_scale", weight.scale.detach().float().reshape(-1))
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.quantize_activations = True  # False: the parity check's rounding-free reference

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., K) -> (..., N)
        if not self.quantize_activations:
            y = x @ (self.qdata.float() * self.weight_scale[:, None]).t()
            return y if self.bias is None else y + self.bias
        # torchao's choose_qparams_affine + quantize_affine, op for op (x * (1/s), not x / s)
        scale = (x.abs().amax(dim=-1, keepdim=True) / HALF_RANGE).clamp(min=EPS)  # (..., 1)
        quantized = torch.clamp(torch.round(x * (1.0 / scale)), QUANT_MIN, QUANT_MAX)
        rows = quantized.to(torch.int8).reshape(-1, x.shape[-1])  # (M, K)
        accumulated = torch._int_mm(rows, self.qdata.t())  # (M, N) int32, exact
        y = accumulated.float() * scale.reshape(-1, 1) * self.weight_scale
        y = y.reshape(*x.shape[:-1], -1)
        return y if self.bias is None else y + self.bias


def is_int8_dynamic(module: nn.Module) -> bool:
    """A linear layer whose weight torchao quantized the way int8-dynamic does."""
    weight = getattr(module, "weight", None)
    kwargs = getattr(weight, "act_quant_kwargs", None)
    if not isinstance(module, nn.Linear) or kwargs is None:
        return False
    from torchao.quantization import MappingType, PerRow

    zero = getattr(weight, "zero_point", None)
    return (
        kwargs.mapping_type == MappingType.SYMMETRIC
        and isinstance(kwargs.granularity, PerRow)
        and not kwargs.reduce_range
        and weight.act_pre_scale is None
        and weight.act_quant_scale is None
        and weight.qdata.dim() == 2
        and weight.scale.numel() == weight.qdata.shape[0]
        and (zero is None or not bool(zero.any()))
    )


def with_int8_linears(network: nn.Module) -> nn.Module:
    """A copy of `network` with each int8-dynamic linear as `Int8DynamicLinear`; `network`
    itself where it has none."""
    names = [name for name, module in network.named_modules() if is_int8_dynamic(module)]
    if not names:
        return network
    rewrite = copy.deepcopy(network)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = rewrite.get_submodule(parent_name)
        setattr(parent, child, Int8DynamicLinear(getattr(parent, child)))
    return rewrite


def rounding_allowance(model: nn.Module, inputs: torch.Tensor, *, batch: int) -> np.ndarray:
    """Per sample (max over its outputs): twice how far the activations' int8 rounding moves
    `model`'s outputs (all zeros without int8-dynamic layers).

    onnxruntime computes the layers before a quantized one in another float order, so an
    activation that lands within ~1e-7 of a rounding boundary can round the other way: one
    step (the scale s) instead of torchao's. Both are roundings of the same value, each off
    by at most s/2 per activation, so onnxruntime's outputs are as far from the unrounded
    ones as torchao's: by the triangle inequality, within twice that distance of torchao's.
    """
    layers = [module for module in model.modules() if isinstance(module, Int8DynamicLinear)]
    distances = [torch.zeros(len(inputs))]
    with torch.no_grad():
        for part in inputs.split(batch) if layers else []:
            rounded = model(part).float()
            _set_rounding(layers, False)
            try:
                unrounded = model(part).float()
            finally:
                _set_rounding(layers, True)
            distances.append((rounded - unrounded).abs().reshape(len(part), -1).amax(dim=1))
    return 2 * torch.cat(distances[1:] or distances).double().numpy()


def _set_rounding(layers: list[Int8DynamicLinear], rounded: bool) -> None:
    for layer in layers:
        layer.quantize_activations = rounded


def _int_mm_dynamo(a, b):
    """aten._int_mm for the dynamo exporter (onnxscript): u8 x s8 MatMulInteger."""
    import onnx
    from onnxscript import opset18 as op

    shift = op.Constant(value=onnx.helper.make_tensor("shift", onnx.TensorProto.INT16, [], [SHIFT]))
    zero = op.Constant(value=onnx.helper.make_tensor("zero", onnx.TensorProto.UINT8, [], [SHIFT]))
    widened = op.Add(op.Cast(a, to=onnx.TensorProto.INT16), shift)
    return op.MatMulInteger(op.Cast(widened, to=onnx.TensorProto.UINT8), b, zero)


def _int_mm_legacy(g, a, b):
    """aten::_int_mm for the legacy TorchScript exporter: the same MatMulInteger."""
    import onnx

    shift = g.op("Constant", value_t=torch.tensor(SHIFT, dtype=torch.int16))
    zero = g.op("Constant", value_t=torch.tensor(SHIFT, dtype=torch.uint8))
    widened = g.op("Add", g.op("Cast", a, to_i=onnx.TensorProto.INT16), shift)
    return g.op("MatMulInteger", g.op("Cast", widened, to_i=onnx.TensorProto.UINT8), b, zero)


def dynamo_translations() -> dict:
    """`custom_translation_table` for `torch.onnx.export(..., dynamo=True)`."""
    return {torch.ops.aten._int_mm.default: _int_mm_dynamo}


def register_legacy_symbolic(opset: int) -> None:
    """Teach the legacy exporter aten::_int_mm (idempotent; it has no op of its own)."""
    torch.onnx.register_custom_op_symbolic("aten::_int_mm", _int_mm_legacy, opset)
