"""ONNX export of every built-in model family: onnxruntime's outputs against PyTorch's on the
run's own test inputs (max abs difference <= 1e-4 in fp32), the scaling inside the graph,
dynamic batch, the figures in export.json, and refusals as one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import scaletrain
from scaletrain.cli import main
from scaletrain.errors import UserError
from scaletrain.trained.onnx_export import ParityError, export_onnx, load_onnx

# each export takes seconds (dynamo tracing): mlp in the fast suite, the rest marked slow
PARITY_FAMILIES = [
    "mlp",
    *(
        pytest.param(name, marks=pytest.mark.slow)
        for name in ("cnn", "resnet", "textcnn", "rnn-lstm", "rnn-gru", "rnn-last", "gpt", "gpt-lm")
    ),
]


@pytest.mark.parametrize("name", PARITY_FAMILIES)
def test_every_family_exports_within_tolerance_of_pytorch(family_run, name, tmp_path):
    run = family_run(name)
    path = scaletrain.export(run.run_dir, format="onnx", out=tmp_path / f"{name}.onnx")
    figures = json.loads((tmp_path / "export.json").read_text())
    assert figures["max_abs_diff"] <= 1e-4
    assert figures["samples"] > 2 and figures["opset"] >= 17
    assert set(figures["latency_ms"]) == {"torch", "onnxruntime"}
    assert all(value > 0 for engine in figures["latency_ms"].values() for value in engine.values())
    # an independent check: the file onnxruntime loads, a batch size not seen at export,
    # against the run's own network on the run's preprocessed inputs
    session = load_onnx(path)
    spec, preprocessor = run.spec_and_preprocessor()
    generator = torch.Generator().manual_seed(1)
    if spec.input_dtype == torch.int64:
        raw = torch.randint(1, spec.vocab_size, (5, *spec.input_shape), generator=generator)
    else:
        raw = torch.rand(5, *spec.input_shape, generator=generator) * 16
    got = session.run(None, {"inputs": raw.numpy()})[0]
    with torch.no_grad():
        expected = run.model.cpu().float().eval()(preprocessor.transform(raw))
    assert got.shape == tuple(expected.shape)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4, rtol=0)


def test_regression_graph_returns_values_in_the_targets_units(family_run, tmp_path):
    run = family_run("mlp-regression")
    path = scaletrain.export(run.run_dir, format="onnx", out=tmp_path / "reg.onnx")
    from sklearn.datasets import load_diabetes

    features = load_diabetes().data[:40].astype(np.float32)
    got = load_onnx(path).run(None, {"inputs": features})[0]
    expected = run.predict(features)  # standardized targets turned back into their units
    assert np.abs(expected).max() > 10  # not the standardized scale
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=1e-5)


def test_text_run_writes_its_tokenizer_beside_the_graph(family_run, tmp_path):
    run = family_run("textcnn")
    scaletrain.export(run.run_dir, format="onnx", out=tmp_path / "text.onnx")
    description = json.loads((tmp_path / "export.json").read_text())
    sidecar = json.loads((tmp_path / description["graph"]["encoder_file"]).read_text())
    assert sidecar["encoder"]["kind"] == "text"
    assert description["graph"]["input_dtype"] == "int64"


def test_cli_prints_the_table(family_run, tmp_path, capsys):
    run = family_run("mlp")
    out = tmp_path / "cli.onnx"
    assert main(["export", str(run.run_dir), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "onnxruntime" in printed.out and "max abs diff" in printed.out
    assert out.is_file() and (tmp_path / "export.json").is_file()


def test_a_difference_over_the_tolerance_is_one_line_and_writes_nothing(tmp_path):
    class Noisy(nn.Module):  # traced rand: onnxruntime draws other numbers than torch
        def forward(self, inputs):
            return inputs + torch.rand(inputs.shape)

    path = tmp_path / "noisy.onnx"
    with pytest.raises(ParityError, match=r"noisy.onnx: onnxruntime differs from PyTorch by"):
        export_onnx(Noisy(), torch.zeros(8, 3), path)
    assert not path.exists()


def test_a_compressed_module_exports_through_the_function(family_run, tmp_path):
    """Pruning that removes hidden units makes physically smaller layers: any nn.Module
    exports the same way (the `compress` command calls export_onnx)."""
    network = family_run("mlp").model.cpu().eval()
    first, last = network.blocks[0].linear, network.output
    keep = first.weight.norm(dim=1).argsort(descending=True)[:8]
    pruned = nn.Sequential(
        nn.Linear(first.in_features, 8), nn.ReLU(), nn.Linear(8, last.out_features)
    )
    with torch.no_grad():
        pruned[0].weight.copy_(first.weight[keep])
        pruned[0].bias.copy_(first.bias[keep])
        pruned[2].weight.copy_(last.weight[:, keep])
        pruned[2].bias.copy_(last.bias)
    inputs = torch.randn(100, first.in_features)
    figures = export_onnx(pruned, inputs[:1], tmp_path / "pruned.onnx", inputs=inputs)
    assert figures["max_abs_diff"] <= 1e-4 and figures["samples"] == 100
    assert figures["file_bytes"] == (tmp_path / "pruned.onnx").stat().st_size


class UserNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 10))

    def forward(self, inputs):
        return self.layers(inputs)


def test_a_user_module_run_needs_the_python_api(tmp_path, capsys, user_run):
    run = user_run(UserNet())
    assert main(["export", str(run.run_dir), "--format", "onnx"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and 'format="onnx"' in error and "UserNet" in error
    path = scaletrain.export(run.run_dir, format="onnx", model=UserNet())
    assert path.name == "model.onnx" and load_onnx(path) is not None


def test_an_opset_below_17_is_refused(family_run, tmp_path):
    with pytest.raises(UserError, match="--opset: expected 17 or higher, got 13"):
        scaletrain.export(
            family_run("mlp").run_dir, format="onnx", opset=13, out=tmp_path / "m.onnx"
        )


def test_an_rnn_reading_its_last_state_exports_in_its_rewritten_form(family_run, tmp_path):
    """The packed final state fails in torch's legacy exporter; the export reads the same
    numbers from the outputs (checked against the run's own network above, and here that
    the rewrite was used and still goes through the packed path)."""
    run = family_run("rnn-gru")
    scaletrain.export(run.run_dir, format="onnx", out=tmp_path / "gru.onnx")
    assert json.loads((tmp_path / "export.json").read_text())["exporter"] == "torchscript"


def test_a_rewrite_that_differs_from_the_network_stops_the_export():
    from scaletrain.trained.onnx_adapters import check_rewrite

    inputs = torch.randn(10, 4)
    with pytest.raises(UserError, match=r"onnx: the export form of this Linear differs from it"):
        check_rewrite(nn.Linear(4, 2), nn.Linear(4, 2), inputs)
