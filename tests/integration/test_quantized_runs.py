"""Quantized runs beyond the digits CNN: a GPT language model quantized and continued through
`scaletrain generate`, a user module's run quantized through the Python API
(`scaletrain.compress.compress(run_dir, model=...)`) and used by `predict` and `evaluate`,
and an mlp's QAT run exported to ONNX with its int8 weights.

The GPT ties its head to its embedding (one tensor under two names), which the compress
table's size measurement could not write before (safetensors refuses shared tensors); its
letters-in-order corpus makes greedy decoding's next letter certain, so the float and the
quantized model must continue a prompt alike.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

import scaletrain
from scaletrain.cli import main
from scaletrain.compress import CompressOptions, compress
from scaletrain.errors import UserError

pytestmark = pytest.mark.slow

LETTERS = "abcdefghijklmnopqrst"
QUIET = {"every_steps": 10, "progress": False, "tensorboard": False, "report": False}
NO_CHECKPOINTS = {"every_epochs": 0, "save_best": False}
COMPRESS_QUIET = ["log.report=false", "log.progress=false"]


def write_letter_runs(path, *, num_texts: int = 300) -> None:
    """Texts running up the alphabet from a random letter: the next letter is certain."""
    rng = np.random.default_rng(0)
    rows = ["text,label"]
    for start in rng.integers(0, len(LETTERS), num_texts):
        rows.append("".join(LETTERS[(start + i) % len(LETTERS)] for i in range(24)) + ",0")
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def gpt_runs(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("quantized_gpt")
    write_letter_runs(out / "letters.csv")
    config = {
        "run": {"name": "gpt", "seed": 0, "out_dir": str(out)},
        "data": {
            "source": "text_csv",
            "path": str(out / "letters.csv"),
            "text": {"vectorizer": "char"},
            "context_length": 16,
            "task": "language_model",
        },
        "model": {"name": "gpt", "n_layer": 2, "n_head": 2, "d_model": 32},  # tied head
        "optim": {"name": "adamw", "lr": 1e-2},
        "train": {"max_steps": 40, "batch_size": 32, "precision": "bf16-mixed"},
        "checkpoint": NO_CHECKPOINTS,
        "log": QUIET,
    }
    made = {"float": scaletrain.train(config).run_dir}
    made["float_text"] = scaletrain.generate(
        made["float"], "cdef", max_new_tokens=16, temperature=0.0
    )
    for mode in ("int8-dynamic", "int4-weight"):
        options = CompressOptions(quantize=mode, latency_repeats=1, overrides=COMPRESS_QUIET)
        made[mode] = compress(made["float"], options, out=out / mode)
    return made


def _generate(run_dir, capsys) -> tuple[str, str]:
    command = ["generate", str(run_dir), "--prompt", "cdef", "--temperature", "0"]
    assert main([*command, "--max-new-tokens", "16"]) == 0
    captured = capsys.readouterr()
    return captured.out.strip(), captured.err


@pytest.mark.parametrize("mode", ["int8-dynamic", "int4-weight"])
def test_generate_on_a_quantized_gpt_is_greedy_deterministic_and_as_the_float(
    gpt_runs, capsys, mode
):
    result = gpt_runs[mode]
    text, notes = _generate(result.run_dir, capsys)
    assert f"weights: {mode} (compressed.safetensors)" in notes  # the quantized model
    assert _generate(result.run_dir, capsys)[0] == text  # greedy: the same tokens again
    # the float model learned the alphabet, and the quantized one continues alike
    assert text == gpt_runs["float_text"] == "cdefghijklmnopqrstab"
    # the CLI's model is the in-memory quantized one, whose logits differ from the float's
    ids = torch.arange(2, 18).unsqueeze(0)
    loaded = scaletrain.load_run(result.run_dir).model
    with torch.inference_mode():
        quantized_logits = result.model(ids)
        assert torch.equal(loaded(ids), quantized_logits)
        float_logits = scaletrain.load_run(result.run_dir, checkpoint="last").model(ids)
    assert (quantized_logits - float_logits).abs().max() > 1e-4


class TwoLayerNet(nn.Module):
    """A user module with linear layers for torchao to quantize."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1))


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quantized_user")
    config = {
        "run": {"name": "user", "seed": 0, "out_dir": str(out)},
        "data": {"source": "builtin", "name": "digits", "layout": "flat"},
        "optim": {"name": "adamw", "lr": 1e-2},
        "train": {"max_steps": 30, "batch_size": 64, "precision": "bf16-mixed"},
        "checkpoint": NO_CHECKPOINTS,
        "log": QUIET,
    }
    return scaletrain.train(config, model=TwoLayerNet())


def test_a_user_modules_run_quantizes_through_the_python_api(user_run, tmp_path):
    result = compress(
        user_run.run_dir,
        model=TwoLayerNet(),
        quantize="int8-dynamic",
        latency_repeats=1,
        out=tmp_path / "q",
    )
    raw = np.random.default_rng(0).uniform(0, 16, size=(12, 64)).astype(np.float32)
    loaded = scaletrain.load_run(result.run_dir, model=TwoLayerNet())
    assert loaded.weights["name"] == "int8-dynamic (compressed.safetensors)"
    assert type(loaded.model.body[0].weight) is not nn.Parameter  # a torchao tensor
    with torch.inference_mode():
        expected = torch.softmax(result.model(loaded.preprocess(raw)).float(), dim=1).numpy()
    np.testing.assert_array_equal(
        scaletrain.predict(result.run_dir, raw, model=TwoLayerNet()), expected
    )
    metrics = scaletrain.evaluate(result.run_dir, split="test", model=TwoLayerNet())
    assert metrics["loss"] == pytest.approx(result.after.metric, rel=1e-5)
    float_probs = scaletrain.predict(result.run_dir, raw, model=TwoLayerNet(), checkpoint="last")
    assert np.abs(float_probs - expected).max() > 1e-5  # --checkpoint: the float weights


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "was trained with a user module (TwoLayerNet); pass a fresh instance of it"),
        (
            {"model": TwoLayerNet(), "quantize": "qat", "finetune_epochs": 1},
            "a user module (TwoLayerNet) is quantized or pruned as it is",
        ),
    ],
    ids=["no-model", "fine-tuning"],
)
def test_a_user_modules_run_refuses_in_one_line(user_run, tmp_path, kwargs, message):
    options = {"quantize": "int8-dynamic", **kwargs}
    with pytest.raises(UserError, match=re.escape(message)) as refused:
        compress(user_run.run_dir, out=tmp_path / "q", **options)
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "q").exists()


def test_a_pruned_tied_gpt_is_stored_once_and_reloads_tied(gpt_runs, tmp_path):
    """Before: `Some tensors share memory` from safetensors when the pruned run was saved."""
    options = CompressOptions(prune=0.5, latency_repeats=1, overrides=COMPRESS_QUIET)
    result = compress(gpt_runs["float"], options, out=tmp_path / "pruned")
    from safetensors.torch import load_file

    stored = load_file(str(result.run_dir / "compressed.safetensors"))
    assert "tok_emb.weight" in stored and "head.weight" not in stored  # the tie, stored once
    loaded = scaletrain.load_run(result.run_dir).model
    assert loaded.head.weight is loaded.tok_emb.weight  # tied again after the reload
    ids = torch.arange(2, 18).unsqueeze(0)
    with torch.inference_mode():
        assert torch.equal(loaded(ids), result.model(ids))
    assert float((loaded.tok_emb.weight == 0).float().mean()) == pytest.approx(0.5, abs=0.01)


@pytest.fixture(scope="module")
def qat_mlp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("qat_mlp")
    config = {
        "run": {"name": "mlp", "seed": 0, "out_dir": str(out)},
        "data": {"source": "builtin", "name": "digits"},
        "model": {"name": "mlp", "hidden": [64, 32]},
        "optim": {"name": "adamw", "lr": 1e-2},
        "train": {"max_steps": 40, "batch_size": 64, "precision": "bf16-mixed"},
        "checkpoint": NO_CHECKPOINTS,
        "log": QUIET,
    }
    source = scaletrain.train(config).run_dir
    options = CompressOptions(
        quantize="qat", finetune_epochs=1, latency_repeats=1, overrides=COMPRESS_QUIET
    )
    return compress(source, options, out=out / "qat").run_dir


def test_a_qat_mlp_exports_to_onnx_with_int8_weights_and_its_eval_numbers(qat_mlp_run, tmp_path):
    import json

    import onnx

    from scaletrain.data import build_data
    from scaletrain.trained.onnx_export import load_onnx

    out = tmp_path / "qat.onnx"
    assert main(["export", str(qat_mlp_run), "--format", "onnx", "--out", str(out)]) == 0
    figures = json.loads((tmp_path / "export.json").read_text())
    assert figures["checkpoint"]["name"] == "qat (compressed.safetensors)"
    bound = 1e-4 + figures["int8_rounding_allowance_max"]
    assert figures["max_abs_diff"] <= bound
    graph = onnx.load(str(out)).graph
    assert [node.op_type for node in graph.node].count("MatMulInteger") == 3
    int8 = sum(len(i.raw_data) for i in graph.initializer if i.data_type == onnx.TensorProto.INT8)
    assert int8 == 64 * 64 + 64 * 32 + 32 * 10  # every linear weight, one byte each
    # the raw test split through onnxruntime: the quantized module's logits and accuracy
    loaded = scaletrain.load_run(qat_mlp_run)
    test = build_data(loaded.config.data, seed=loaded.config.run.seed).test
    _, preprocessor = loaded.spec_and_preprocessor()
    shift, scale = preprocessor.shift.double(), preprocessor.scale.double()
    raw = (test.inputs.double().flatten(1) * scale + shift).float().reshape(test.inputs.shape)
    (logits,) = load_onnx(out).run(None, {"inputs": raw.numpy()})
    with torch.inference_mode():
        expected = loaded.model(test.inputs.float()).numpy()
    assert np.abs(logits - expected).max() <= bound
    accuracy = float((logits.argmax(axis=1) == test.targets.numpy()).mean())
    evaluated = scaletrain.evaluate(qat_mlp_run, split="test")["accuracy"]
    # a rounding flipped by onnxruntime's float order could move one sample's argmax at most
    assert accuracy == pytest.approx(evaluated, abs=1 / len(test.targets) + 1e-9)
