"""The ONNX form of torchao's int8-dynamic linears: torchao's arithmetic bit for bit in
PyTorch, int8 weights and MatMulInteger in the graph, and a parity check that tolerates an
activation rounding flipped by onnxruntime's float order but not a wrong graph."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from scaletrain.trained.onnx_export import ParityError, export_onnx, load_onnx
from scaletrain.trained.onnx_int8 import Int8DynamicLinear, rounding_allowance, with_int8_linears
from scaletrain.trained.quantized import quantize


def _quantized_mlp(*, bias: bool = True) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(48, 96, bias=bias), nn.ReLU(), nn.Linear(96, 10, bias=bias))
    return quantize(net.eval(), "int8-dynamic")


def _inputs(count: int = 128, features: int = 48) -> torch.Tensor:
    return torch.randn(count, features, generator=torch.Generator().manual_seed(1)) * 3


@pytest.mark.parametrize("bias", [True, False])
def test_the_export_form_is_torchaos_arithmetic_bit_for_bit(bias):
    quantized = _quantized_mlp(bias=bias)
    rewrite = with_int8_linears(quantized)
    assert isinstance(rewrite[0], Int8DynamicLinear) and isinstance(rewrite[2], Int8DynamicLinear)
    assert type(quantized[0].weight).__name__ == "Int8Tensor"  # the original is left alone
    assert rewrite[0].qdata.dtype == torch.int8
    tokens = torch.randn(3, 5, 96, generator=torch.Generator().manual_seed(2))  # (B, T, C)
    with torch.inference_mode():
        for x in (_inputs(), _inputs(1), torch.zeros(2, 48)):
            assert torch.equal(rewrite(x), quantized(x))
        assert torch.equal(rewrite[2](tokens), quantized[2](tokens))


def test_a_model_without_int8_dynamic_layers_is_not_copied():
    net = quantize(nn.Sequential(nn.Linear(8, 4)), "int8-weight")
    assert with_int8_linears(net) is net
    assert not rounding_allowance(net, torch.randn(5, 8), batch=2).any()


def test_rounding_allowance_is_twice_the_activation_roundings_effect():
    rewrite = with_int8_linears(_quantized_mlp())
    x = _inputs(10)
    layers = [rewrite[0], rewrite[2]]
    # reference in float64: the int8 weights dequantized, activations not rounded
    with torch.no_grad():
        hidden = torch.relu(x.double() @ _dequantized(layers[0]).T + layers[0].bias.double())
        unrounded = hidden @ _dequantized(layers[1]).T + layers[1].bias.double()
        expected = 2 * (rewrite(x).double() - unrounded).abs().amax(dim=1)
    allowance = rounding_allowance(rewrite, x, batch=4)
    np.testing.assert_allclose(allowance, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert (allowance > 1e-3).all()  # int8 rounding moves these outputs measurably
    assert all(layer.quantize_activations for layer in layers)  # switched back on


def _dequantized(layer: Int8DynamicLinear) -> torch.Tensor:
    return layer.qdata.double() * layer.weight_scale.double()[:, None]


def test_export_keeps_the_weights_int8_and_matches_pytorch(tmp_path):
    quantized = _quantized_mlp()
    x = _inputs()
    figures = export_onnx(quantized, x[:2], tmp_path / "q.onnx", inputs=x)
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    assert [node.op_type for node in graph.node].count("MatMulInteger") == 2
    int8 = [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8]
    # the exporter folds the transpose into the initializers: (K, N), one byte a weight
    assert sorted(tuple(i.dims) for i in int8) == [(48, 96), (96, 10)]
    assert sum(len(i.raw_data) for i in int8) == 48 * 96 + 96 * 10
    floats = [i for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    assert sum(np.prod(i.dims) for i in floats) < 250  # scales and biases: no float weight
    # the first layer sees the very inputs: torchao's numbers exactly; the second, after a
    # float ReLU, too (no float op differs before it)
    assert figures["max_abs_diff"] == 0.0
    got = load_onnx(tmp_path / "q.onnx").run(None, {"inputs": x[:7].numpy()})[0]
    with torch.inference_mode():
        np.testing.assert_array_equal(got, quantized(x[:7]).numpy())


class _Nudged(nn.Module):
    """Adds `offset` to its inputs only while being exported: a graph that differs from the
    PyTorch module by that much before its int8 layers."""

    def __init__(self, network: nn.Module, offset: float):
        super().__init__()
        self.network, self.offset = network, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting():
            x = x + self.offset
        return self.network(x)


@pytest.mark.slow
def test_a_rounding_flipped_upstream_passes_and_a_wrong_graph_does_not(tmp_path):
    x = _inputs(256)
    # 1e-5 on inputs of size ~3: a few of the 256 x 48 activations round the other way; its
    # own effect on the outputs (no flip) stays under 1e-4
    nudged = _Nudged(_quantized_mlp(), 1e-5)
    figures = export_onnx(nudged, x[:2], tmp_path / "a.onnx", inputs=x)
    assert figures["samples_over_tolerance"] > 0  # flips happened, beyond 1e-4 alone
    assert figures["max_abs_diff"] <= figures["int8_rounding_allowance_max"]
    with pytest.raises(ParityError, match="2 x the int8 activation rounding"):
        export_onnx(_Nudged(_quantized_mlp(), 0.5), x[:2], tmp_path / "b.onnx", inputs=x)
    assert not (tmp_path / "b.onnx").exists()


@pytest.mark.slow
def test_an_int8_dynamic_rnn_exports_through_the_legacy_exporter(family_run, tmp_path):
    """A classifying rnn packs its sequences, which only the legacy exporter traces: its
    int8 head goes through the legacy aten::_int_mm symbolic."""
    import json

    import scaletrain
    from scaletrain.compress import CompressOptions, compress

    options = CompressOptions(
        quantize="int8-dynamic", latency_repeats=1, overrides=["log.report=false"]
    )
    quantized = compress(family_run("rnn-last").run_dir, options, out=tmp_path / "q").run_dir
    path = scaletrain.export(quantized, format="onnx", out=tmp_path / "q.onnx")
    figures = json.loads((tmp_path / "export.json").read_text())
    assert figures["exporter"] == "torchscript"
    assert figures["max_abs_diff"] <= 1e-4 + figures["int8_rounding_allowance_max"]
    graph = onnx.load(str(path)).graph
    assert [node.op_type for node in graph.node].count("MatMulInteger") == 1  # the head
