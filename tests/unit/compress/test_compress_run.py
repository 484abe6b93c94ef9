"""`scaletrain compress` end to end on one digits CNN trained once for the module: new run
directories that load, the source untouched, accuracy within a point, bad flags refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

import scaletrain
from scaletrain.api import train
from scaletrain.cli import main
from scaletrain.compress import CompressOptions, compress, load_compressed
from scaletrain.compress.measure import latency_ms
from scaletrain.compress.prune import sparsity_of

CONFIG = Path(__file__).parents[3] / "configs" / "digits-fast.yaml"
TRAIN = ["train.precision=bf16-mixed", "log.report=false", "log.progress=false"]
FINETUNE = ["train.precision=bf16-mixed", "log.report=false", "log.progress=false"]
ONE_POINT = 0.01


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    out = tmp_path_factory.mktemp("compress")
    run = train(CONFIG, overrides=[*TRAIN, f"run.out_dir={out}", "train.max_epochs=6"])
    run.wait()
    return run.run_dir


def _digest(root: Path) -> dict:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _options(**kwargs) -> CompressOptions:
    return CompressOptions(latency_repeats=3, overrides=FINETUNE, **kwargs)


@pytest.mark.slow
def test_unstructured_half_sparsity_finetuned_stays_within_a_point(source, tmp_path):
    before = _digest(source)
    options = CompressOptions(
        prune=0.5,
        finetune_epochs=2,
        latency_repeats=3,
        overrides=[*FINETUNE, "checkpoint.save_best=true"],  # saved inside the loop
    )
    result = compress(source, options, out=tmp_path / "u50")
    assert _digest(source) == before  # the source run is only read
    assert result.sparsity == pytest.approx(0.5, abs=1e-4)
    assert result.after.metric >= result.before.metric - ONE_POINT
    for checkpoint in ("best", "last"):  # the masks held through fine-tuning
        reloaded = scaletrain.load_run(tmp_path / "u50", checkpoint=checkpoint)
        assert sparsity_of(reloaded.model) == pytest.approx(0.5, abs=1e-4)
    assert not list(tmp_path.glob("*.compressing-*"))  # staging directories gone


@pytest.mark.slow
def test_structured_shrinks_the_model_and_its_latency(source, tmp_path):
    result = compress(
        source,
        CompressOptions(prune=0.5, structured=True, finetune_epochs=2, overrides=FINETUNE),
        out=tmp_path / "s50",
    )
    assert result.after.total < 0.3 * result.before.total
    assert result.after.disk_bytes < 0.3 * result.before.disk_bytes
    original = scaletrain.load_run(source).model.cpu()
    assert _fastest_ms(result.model) < _fastest_ms(original)  # shared cores: best of 3 medians
    assert result.after.metric >= result.before.metric - ONE_POINT
    reloaded = scaletrain.load_run(tmp_path / "s50", checkpoint="last")
    assert reloaded.config.model.channels == [16, 32] and reloaded.config.model.head == [64]
    test_metric = scaletrain.evaluate(reloaded, split="test")["accuracy"]
    assert test_metric == pytest.approx(result.after.metric, abs=1 / 360)  # bf16 vs fp32 eval


def _fastest_ms(model) -> float:
    runs = [latency_ms(model, (1, 8, 8), dtype=torch.float32, repeats=10)[64] for _ in range(3)]
    return min(runs)


@pytest.mark.parametrize("mode", ["int8-dynamic", "int8-weight", "int4-weight"])
def test_post_training_quantization_round_trips_and_keeps_accuracy(source, tmp_path, mode):
    result = compress(source, _options(quantize=mode), out=tmp_path / mode)
    assert result.after.metric >= result.before.metric - ONE_POINT
    assert result.after.disk_bytes < result.before.disk_bytes
    loaded = load_compressed(tmp_path / mode)
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(loaded(x), result.model(x))


@pytest.mark.slow
def test_qat_matches_or_beats_post_training_int8(source, tmp_path):
    ptq = compress(source, _options(quantize="int8-dynamic"), out=tmp_path / "ptq")
    qat = compress(source, _options(quantize="qat", finetune_epochs=2), out=tmp_path / "qat")
    assert qat.after.metric >= ptq.after.metric
    assert qat.after.metric >= qat.before.metric - ONE_POINT
    loaded = load_compressed(tmp_path / "qat")
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(loaded(x), qat.model(x))


@pytest.mark.slow
def test_gradual_pruning_reaches_the_final_sparsity(source, tmp_path):
    result = compress(
        source,
        _options(prune=0.6, schedule="gradual", steps=3, finetune_epochs=1),
        out=tmp_path / "gradual",
    )
    assert result.sparsity == pytest.approx(0.6, abs=1e-4)
    assert result.after.metric >= result.before.metric - 2 * ONE_POINT


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--prune", "1.5"], "--prune: expected a fraction in [0, 1), got 1.5"),
        (["--quantize", "int3"], "--quantize: expected one of int8-dynamic"),
        ([], "nothing to do: pass --prune FRACTION and/or --quantize MODE"),
        (["--quantize", "qat"], "--quantize qat: needs --finetune-epochs N"),
        (["--prune", "0.5", "--schedule", "gradual"], "--schedule gradual: needs"),
        (["--prune", "0.5", "--targets", "linear,attention"], "--targets: expected a comma"),
        (["--prune", "0.5", "--structured", "--targets", "conv"], "--targets: applies to unstr"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(source, tmp_path, capsys, flags, message):
    out = tmp_path / "refused"
    code = main(["compress", str(source), *flags, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith(f"error: {message}") and "\n" not in err
    assert not out.exists()


def test_existing_output_is_refused(source, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    code = main(["compress", str(source), "--prune", "0.5", "--out", str(tmp_path / "taken")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: --out:") and "pass --overwrite" in err


def test_cli_prints_the_table_and_the_run_evaluates(source, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["compress", str(source), "--quantize", "int8-weight", "--repeats", "2",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "parameters (nonzero/total)" in printed and "test accuracy" in printed
    assert main(["eval", str(out)]) == 0  # its quantized model (test_quantized_run.py)


def test_a_refusal_after_the_start_leaves_no_directory(source, tmp_path, capsys):
    out = tmp_path / "late"
    code = main(
        ["compress", str(source), "--prune", "0.5", "--finetune-epochs", "1", "--out", str(out),
         "optim.lr=-1"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: optim.lr") and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_tampered_weights_file_is_one_user_error(source, tmp_path):
    from safetensors.torch import load_file, save_file

    from scaletrain.errors import UserError

    compress(source, _options(quantize="int8-weight"), out=tmp_path / "q")
    weights = tmp_path / "q" / "compressed.safetensors"
    tensors = load_file(str(weights))
    tensors["output.weight.qdata"] = tensors["output.weight.qdata"][:3]  # a wrong shape
    save_file(tensors, str(weights))
    with pytest.raises(UserError, match=r"compressed.safetensors: does not match compress.json"):
        load_compressed(tmp_path / "q")
