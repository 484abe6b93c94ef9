"""Each quantization mode's file form is an exact round trip (no pickle), and close to fp32."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file, save_file

from scaletrain.compress.quantize import _pack_int4, load_quantized, quantize, quantized_state
from scaletrain.config import MLPConfig
from scaletrain.models.mlp import MLP
from scaletrain.trained.quantized import unpack_int4


def _mlp() -> MLP:
    torch.manual_seed(0)
    return MLP(MLPConfig(hidden=[64, 48]), in_features=40, num_outputs=5).eval()


@pytest.mark.parametrize("mode", ["int8-dynamic", "int8-weight", "int4-weight"])
def test_quantized_weights_round_trip_through_safetensors(tmp_path, mode):
    model = _mlp()
    x = torch.randn(9, 40, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = model(x)
    quantized = quantize(copy.deepcopy(model), mode)
    tensors, names = quantized_state(quantized)
    assert names == ["blocks.0.linear.weight", "blocks.1.linear.weight", "output.weight"]
    save_file(tensors, str(tmp_path / "q.safetensors"))
    loaded = load_quantized(_fresh(), mode, load_file(str(tmp_path / "q.safetensors")), names)
    with torch.no_grad():
        expected, got = quantized(x), loaded(x)
    assert torch.equal(got, expected)
    tolerance = 0.15 if mode == "int4-weight" else 0.03
    assert (got - reference).abs().max() < tolerance * reference.abs().max()
    assert not torch.equal(got, reference)  # it really is quantized


def _fresh() -> MLP:
    torch.manual_seed(123)  # other weights: everything must come from the file
    return MLP(MLPConfig(hidden=[64, 48]), in_features=40, num_outputs=5).eval()


def test_int4_packing_is_exact_and_halves_the_bytes():
    values = torch.randint(-8, 8, (5, 7), dtype=torch.int8)
    packed = _pack_int4(values)
    assert packed.dtype == torch.uint8 and packed.numel() == 18  # 35 values, two per byte
    assert torch.equal(unpack_int4(packed, values.shape), values)
