"""A quantized run is used as quantized everywhere a run goes: load_run, eval, predict and
export (safetensors bit for bit, ONNX with the int8 weights); a pruned run exports as
any run. One digits CNN trained once for the module, compressed once per mode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import scaletrain
from scaletrain.api import train
from scaletrain.cli import main
from scaletrain.compress import CompressOptions, compress, load_compressed
from scaletrain.data import build_data

CONFIG = Path(__file__).parents[3] / "configs" / "digits-fast.yaml"
QUIET = ["log.report=false", "log.progress=false"]
TRAIN = ["train.precision=bf16-mixed", "train.max_epochs=2", *QUIET]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("quantized")
    source = train(CONFIG, overrides=[*TRAIN, f"run.out_dir={out}"]).wait().run_dir
    made = {"source": source}
    for mode in ("int8-dynamic", "int8-weight", "int4-weight"):
        options = CompressOptions(quantize=mode, latency_repeats=1, overrides=QUIET)
        made[mode] = compress(source, options, out=out / mode).run_dir
    options = CompressOptions(prune=0.5, latency_repeats=1, overrides=QUIET)
    made["pruned"] = compress(source, options, out=out / "pruned").run_dir
    return made


def _test_split(run_dir: Path):
    cfg = scaletrain.load_run(run_dir, checkpoint="last").config
    return build_data(cfg.data, seed=cfg.run.seed).test


def _loss(model, split) -> float:
    with torch.inference_mode():
        return F.cross_entropy(model(split.inputs.float()), split.targets).item()


def test_load_run_and_eval_give_the_quantized_model(runs):
    run_dir = runs["int8-dynamic"]
    quantized = load_compressed(run_dir)
    loaded = scaletrain.load_run(run_dir)
    assert loaded.weights["name"] == "int8-dynamic (compressed.safetensors)"
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(loaded.model(x), quantized(x))
    split = _test_split(run_dir)
    float_model = scaletrain.load_run(run_dir, checkpoint="last").model.float().eval()
    expected, float_loss = _loss(quantized, split), _loss(float_model, split)
    assert abs(expected - float_loss) > 1e-4  # quantization moves the logits measurably
    assert scaletrain.evaluate(run_dir, split="test")["loss"] == pytest.approx(expected, rel=1e-5)
    with_float = scaletrain.evaluate(run_dir, split="test", checkpoint="last")["loss"]
    assert abs(with_float - expected) > 1e-4  # --checkpoint: the float weights


def test_predict_uses_the_quantized_model(runs, tmp_path):
    run_dir = runs["int8-dynamic"]
    loaded = scaletrain.load_run(run_dir)
    raw = np.random.default_rng(0).uniform(0, 16, size=(12, 1, 8, 8)).astype(np.float32)
    with torch.inference_mode():
        logits = load_compressed(run_dir)(loaded.preprocess(raw))
    expected = torch.softmax(logits.float(), dim=1).numpy()
    np.testing.assert_array_equal(scaletrain.predict(run_dir, raw), expected)
    float_probs = scaletrain.predict(run_dir, raw, checkpoint="last")
    assert np.abs(float_probs - expected).max() > 1e-5


def test_cli_eval_says_which_weights(runs, capsys):
    assert main(["eval", str(runs["int8-dynamic"])]) == 0
    assert "weights: int8-dynamic (compressed.safetensors)" in capsys.readouterr().err
    assert main(["eval", str(runs["int8-dynamic"]), "--checkpoint", "last"]) == 0
    assert "weights: int8" not in capsys.readouterr().err


@pytest.mark.parametrize("command", ["eval", "predict", "export"])
def test_a_cut_quantized_weights_file_is_one_line(runs, tmp_path, capsys, command):
    """The weights note is said once they loaded: before, it preceded the refusal."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs["int8-dynamic"], run)
    weights = run / "compressed.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 8, 8), dtype=np.float32))
    extra = {"predict": [str(tmp_path / "x.npy")], "export": ["--out", str(tmp_path / "q")]}
    capsys.readouterr()
    assert main([command, str(run), *extra.get(command, [])]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {weights}: "), lines


@pytest.mark.parametrize("mode", ["int8-dynamic", "int8-weight", "int4-weight"])
def test_safetensors_export_rebuilds_the_quantized_model_bit_for_bit(runs, tmp_path, mode):
    out = tmp_path / "q.safetensors"
    assert main(["export", str(runs[mode]), "--out", str(out)]) == 0
    exported = scaletrain.load_exported(out)
    assert exported.weights["name"] == f"{mode} (compressed.safetensors)"
    raw = np.random.default_rng(1).uniform(0, 16, size=(20, 1, 8, 8)).astype(np.float32)
    x = exported.preprocess(raw)
    with torch.inference_mode():
        assert torch.equal(exported.model(x), load_compressed(runs[mode])(x))
    np.testing.assert_array_equal(exported.predict(raw), scaletrain.predict(runs[mode], raw))
    float_out = scaletrain.export(runs[mode], out=tmp_path / "f.safetensors", checkpoint="best")
    assert scaletrain.load_exported(float_out).weights["name"] == "best"
    assert out.stat().st_size < 0.7 * float_out.stat().st_size  # the linear head in int8


def test_an_edited_quantized_export_is_refused(runs, tmp_path, capsys):
    from safetensors.torch import load_file, safe_open, save_file

    out = tmp_path / "q.safetensors"
    scaletrain.export(runs["int8-weight"], out=out)
    with safe_open(str(out), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(out))
    tensors["output.weight.qdata"][0, 0] += 1
    save_file(tensors, str(out), metadata=metadata)
    with pytest.raises(scaletrain.errors.CheckpointError, match="do not match its checksum"):
        scaletrain.load_exported(out)


def test_onnx_export_of_int8_weight_checks_parity_with_the_quantized_model(runs, tmp_path):
    out = tmp_path / "q.onnx"
    assert main(["export", str(runs["int8-weight"]), "--format", "onnx", "--out", str(out)]) == 0
    figures = json.loads((tmp_path / "export.json").read_text())
    assert figures["checkpoint"]["name"] == "int8-weight (compressed.safetensors)"
    assert figures["max_abs_diff"] < 1e-4
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    raw = np.random.default_rng(2).uniform(0, 16, size=(8, 1, 8, 8)).astype(np.float32)
    loaded = scaletrain.load_run(runs["int8-weight"])
    with torch.inference_mode():
        expected = loaded.model(loaded.preprocess(raw)).numpy()
    (got,) = session.run(None, {"inputs": raw})
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.slow
def test_onnx_export_of_int8_dynamic_keeps_int8_and_gives_the_eval_numbers(runs, tmp_path):
    import onnx

    from scaletrain.trained.onnx_export import load_onnx

    out = tmp_path / "q.onnx"
    assert main(["export", str(runs["int8-dynamic"]), "--format", "onnx", "--out", str(out)]) == 0
    figures = json.loads((tmp_path / "export.json").read_text())
    assert figures["checkpoint"]["name"] == "int8-dynamic (compressed.safetensors)"
    assert figures["max_abs_diff"] <= 1e-4 + figures["int8_rounding_allowance_max"]
    graph = onnx.load(str(out)).graph
    assert [node.op_type for node in graph.node].count("MatMulInteger") == 2  # head, output
    int8 = [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8]
    loaded = scaletrain.load_run(runs["int8-dynamic"])
    linear_weights = [loaded.model.head[0].linear.weight, loaded.model.output.weight]
    assert sum(len(i.raw_data) for i in int8) == sum(w.numel() for w in linear_weights)
    # onnxruntime on the whole test split, raw pixels in: `scaletrain eval`'s accuracy
    split = _test_split(runs["int8-dynamic"])
    spec, preprocessor = loaded.spec_and_preprocessor()
    shift, scale = preprocessor.shift.reshape(1, 1, 1, 1), preprocessor.scale.reshape(1, 1, 1, 1)
    raw = (split.inputs.double() * scale.double() + shift.double()).float()
    (logits,) = load_onnx(out).run(None, {"inputs": raw.numpy()})
    accuracy = float((logits.argmax(axis=1) == split.targets.numpy()).mean())
    evaluated = scaletrain.evaluate(runs["int8-dynamic"], split="test")["accuracy"]
    # a rounding flipped by onnxruntime's float order could move one sample's argmax at most
    assert accuracy == pytest.approx(evaluated, abs=1 / len(split.targets) + 1e-9)
    with torch.inference_mode():
        expected = loaded.model(split.inputs.float()).numpy()
    assert np.abs(logits - expected).max() <= 1e-4 + figures["int8_rounding_allowance_max"]


def test_a_pruned_run_exports_like_any_run(runs, tmp_path):
    out = tmp_path / "pruned.safetensors"
    scaletrain.export(runs["pruned"], out=out)
    exported, loaded = scaletrain.load_exported(out), scaletrain.load_run(runs["pruned"])
    raw = np.random.default_rng(3).uniform(0, 16, size=(10, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(exported.predict(raw), loaded.predict(raw))
    zeros = sum(int((p == 0).sum()) for p in exported.model.parameters() if p.dim() > 1)
    assert zeros > 0.4 * sum(p.numel() for p in exported.model.parameters() if p.dim() > 1)
