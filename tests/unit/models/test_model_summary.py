"""The model summary against torch itself: counts, bytes, a real forward's shapes, flops.py."""

from __future__ import annotations

import io
import json

import pytest
import torch
import torch._dynamo  # noqa: F401  (FlopCounterMode's import sets an env var: see test_models_flops)
from rich.console import Console
from torch import nn

from scaletrain.config import CNNConfig, MLPConfig, TextCNNConfig
from scaletrain.models import build_model, count_flops_per_sample, summarize_model, summary_table
from scaletrain.models.summary import BYTES_PER_MB

BUILT_IN = {  # name -> (config, sample shape, input dtype)
    "mlp": (MLPConfig(hidden=[32, 16], batch_norm=True, dropout=0.1), (1, 8, 8), torch.float32),
    "cnn": (CNNConfig(channels=[4, 8], head=[16], batch_norm=True), (1, 8, 8), torch.float32),
    "textcnn": (TextCNNConfig(embed_dim=8, kernel_sizes=[2, 3]), (12,), torch.int64),
}


def _built_in(name: str) -> tuple[nn.Module, tuple[int, ...], torch.dtype]:
    cfg, shape, dtype = BUILT_IN[name]
    torch.manual_seed(0)
    return build_model(cfg, input_shape=shape, num_outputs=5, vocab_size=40), shape, dtype


def _render(renderable) -> str:
    console = Console(file=io.StringIO(), width=140, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def _real_output_shapes(model: nn.Module, inputs: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Each submodule's output shape in a plain forward on CPU (first call), by name."""
    shapes = {}

    def record(name):
        def hook(module, args, output):
            shapes.setdefault(name, tuple(output.shape))

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n]
    model.eval()
    with torch.no_grad():
        model(inputs)
    for handle in handles:
        handle.remove()
    return shapes


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_counts_shapes_and_flops_of_built_in_models(name):
    model, shape, dtype = _built_in(name)
    summary = summarize_model(model, shape, input_dtype=dtype)
    assert summary.shapes_from == "meta" and summary.note is None
    assert summary.num_params == sum(p.numel() for p in model.parameters())
    assert summary.num_trainable == summary.num_params and summary.num_frozen == 0
    modules = dict(model.named_modules())
    assert [layer.name for layer in summary.layers] == [n for n in modules if n]
    for layer in summary.layers:
        assert layer.type == type(modules[layer.name]).__name__
        assert layer.num_params == sum(p.numel() for p in modules[layer.name].parameters())
    real = _real_output_shapes(model, torch.zeros((1, *shape), dtype=dtype))
    traced = {layer.name: layer.output_shapes for layer in summary.layers}
    assert traced == {n: ((real[n],) if n in real else None) for n in traced}
    assert summary.flops_per_sample == count_flops_per_sample(model, shape, input_dtype=dtype)
    assert next(model.parameters()).device.type == "cpu"  # the meta pass moved nothing


def test_frozen_layer_counts_as_non_trainable():
    model, shape, dtype = _built_in("mlp")
    model.blocks[0].requires_grad_(False)
    summary = summarize_model(model, shape, input_dtype=dtype)
    frozen = sum(p.numel() for p in model.blocks[0].parameters())
    assert summary.num_params == sum(p.numel() for p in model.parameters())
    assert summary.num_trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert summary.num_frozen == frozen > 0
    layers = {layer.name: layer for layer in summary.layers}
    assert layers["blocks.0"].num_trainable == 0 and layers["output"].num_trainable > 0
    text = _render(summary_table(summary))
    assert "trainable" in text.splitlines()[2]  # a column only when something is frozen
    assert f"non-trainable     {frozen:,}" in text


def test_size_in_mb_is_the_byte_count_by_dtype():
    model = nn.Sequential(nn.Linear(10, 20), nn.BatchNorm1d(20), nn.Linear(20, 3))
    model[2].to(torch.bfloat16)
    model.register_buffer("table", torch.zeros(7, dtype=torch.float64))
    summary = summarize_model(model, (10,))
    assert summary.parameter_bytes == {
        "float32": (10 * 20 + 20 + 2 * 20) * 4,
        "bfloat16": (20 * 3 + 3) * 2,
    }
    # running mean and var; num_batches_tracked; the registered table
    assert summary.buffer_bytes == {"float32": 2 * 20 * 4, "int64": 8, "float64": 7 * 8}
    tensors = [*model.parameters(), *model.buffers()]
    num_bytes = sum(t.numel() * t.element_size() for t in tensors)
    assert summary.size_mb == num_bytes / BYTES_PER_MB == num_bytes / 2**20


def test_shared_parameters_count_once():
    model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))
    model[2].weight = model[0].weight  # tied
    summary = summarize_model(model, (6,))
    assert summary.num_params == sum(p.numel() for p in model.parameters()) == 36 + 12


class ReadsValues(nn.Module):
    """Calls .item() (impossible on meta) and returns a tuple and a dict."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.split = Split()

    def forward(self, x):
        scale = 2.0 if x.abs().sum().item() >= 0 else 1.0  # a host sync on a value
        first, second = self.split(self.linear(x) * scale)
        return {"first": first, "noise": second + torch.randn_like(second)}


class Split(nn.Module):
    def forward(self, x):
        return x[:, :1], x[:, 1:]


def test_a_module_that_breaks_on_meta_is_traced_on_one_real_sample():
    model = ReadsValues().train()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    rng = torch.get_rng_state()
    summary = summarize_model(model, (4,))
    assert summary.shapes_from == "sample" and "item()" in summary.note
    layers = {layer.name: layer.output_shapes for layer in summary.layers}
    assert layers == {"linear": ((1, 3),), "split": ((1, 1), (1, 2))}
    assert summary.flops_per_sample == 2 * 4 * 3
    assert model.training and torch.equal(torch.get_rng_state(), rng)  # randn_like: forked
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())
    assert "(1, 1), (1, 2)" in _render(summary_table(summary))


def test_a_module_that_always_fails_still_gets_a_summary():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 3)

        def forward(self, x):
            raise ValueError("this module needs two inputs")

    summary = summarize_model(Broken(), (4,))
    assert summary.shapes_from == "unknown" and summary.flops_per_sample is None
    assert summary.num_params == 15 and summary.layers[0].output_shapes is None
    assert "sample forward failed (ValueError: this module needs two inputs)" in summary.note
    text = _render(summary_table(summary))
    assert "│ ?" in text and "FLOPs per sample  n/a" in text


def test_layer_the_forward_does_not_call_shows_a_dash():
    model, shape, dtype = _built_in("textcnn")
    summary = summarize_model(model, shape, input_dtype=dtype)
    blocks = next(layer for layer in summary.layers if layer.name == "blocks")
    assert blocks.type == "ModuleList" and blocks.output_shapes is None
    assert "│ —" in _render(summary_table(summary))


def test_rendering_holds_the_totals():
    model, shape, dtype = _built_in("cnn")
    summary = summarize_model(model, shape, input_dtype=dtype)
    text = _render(summary_table(summary))
    assert "CNN: one sample (1, 8, 8) float32" in text
    assert f"total parameters  {summary.num_params:,}" in text
    assert f"trainable         {summary.num_trainable:,}" in text
    assert f"size              {summary.size_mb:,.3f} MB" in text
    assert f"FLOPs per sample  {summary.flops_per_sample:,} (forward)" in text
    assert "(1, 4, 8, 8)" in text  # the first conv's output


def test_to_dict_is_json_ready():
    model, shape, dtype = _built_in("cnn")
    summary = summarize_model(model, shape, input_dtype=dtype)
    data = summary.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["num_params"] == summary.num_params and data["size_mb"] == summary.size_mb
    assert data["input_shape"] == [1, 8, 8] and data["input_dtype"] == "float32"
    assert data["layers"][0]["output_shapes"] == [[1, 8, 2, 2]]  # features: 8x8 -> 2x2


def test_max_rows_leaves_out_the_deepest_levels():
    model, shape, dtype = _built_in("cnn")  # 3 levels: features > 0 > conv
    summary = summarize_model(model, shape, input_dtype=dtype)
    by_depth = [sum(layer.depth <= depth for layer in summary.layers) for depth in (1, 2, 3)]
    assert by_depth[2] == len(summary.layers)
    assert "conv" in _render(summary_table(summary, max_rows=by_depth[2]))
    text = _render(summary_table(summary, max_rows=by_depth[2] - 1))
    assert "conv" not in text and "ConvBlock" in text
    assert f"{by_depth[2] - by_depth[1]} deeper layers not shown" in text
    text = _render(summary_table(summary, max_rows=1))  # the top level shows regardless
    assert "ConvBlock" not in text and "Sequential" in text and "output" in text
