"""`scaletrain generate` and `Run.generate` on a tiny GPT trained on the standard library:
the prompt comes back with a continuation, a seed reproduces it across the CLI and Python,
and a classification run or a damaged/missing tokenizer file is one line and exit 2."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
from distributed_helpers import child_env, run

import scaletrain

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TINY_GPT = [
    "model.n_layer=2",
    "model.d_model=32",
    "model.n_head=2",
    "data.context_length=32",
    "data.text.vocab_size=512",
    "train.max_steps=8",
    "optim.lr=1e-2",
    "train.batch_size=16",
    "train.eval_every_steps=8",
    "train.precision=bf16-mixed",
    "train.device=cpu",
    "log.progress=false",
    "log.tensorboard=false",
    "log.report=false",
]


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return scaletrain.train(
        ROOT / "configs/gpt-stdlib.yaml", overrides=[*TINY_GPT, f"run.out_dir={out}"]
    )


def _generate(run_dir: Path, *options: str):
    command = [sys.executable, "-m", "scaletrain", "generate", str(run_dir), *options]
    return run(command, timeout=300, env=child_env())


def test_cli_prints_prompt_and_continuation_same_as_python(lm_run):
    options = ("--prompt", "def ", "--max-new-tokens", "20", "--seed", "0")
    finished = _generate(lm_run.run_dir, *options)
    assert finished.returncode == 0, finished.output[-2000:]
    text = finished.output.removesuffix("\n")  # stdout and stderr: nothing else printed
    assert text.startswith("def ") and len(text) > len("def ")
    # the same weights (best = last here: 8 steps, one validation) and seed in Python
    assert lm_run.generate("def ", max_new_tokens=20, seed=0) == text
    assert scaletrain.generate(lm_run.run_dir, "def ", max_new_tokens=20, seed=0) == text
    assert lm_run.generate("def ", max_new_tokens=20, seed=1) != text


def test_greedy_through_the_run_is_repeatable(lm_run):
    first = lm_run.generate("import ", max_new_tokens=10, temperature=0)
    assert first == lm_run.generate("import ", max_new_tokens=10, temperature=0, seed=5)


def test_classification_run_is_one_line(tiny_config):
    classified = scaletrain.train(tiny_config)
    finished = _generate(classified.run_dir, "--prompt", "def ")
    assert finished.returncode == 2
    (line,) = finished.output.strip().splitlines()
    assert line.startswith("error: ") and "generate needs a language model" in line, line
    assert "'classification'" in line


@pytest.mark.parametrize("damage", ["tampered", "missing"])
def test_damaged_tokenizer_file_is_one_line(lm_run, tmp_path, damage):
    copy = tmp_path / "run"
    shutil.copytree(lm_run.run_dir, copy)
    preprocess = copy / "preprocess.json"
    if damage == "missing":
        preprocess.unlink()
    else:
        state = json.loads(preprocess.read_text())
        state["encoder"]["tokenizer"]["json"] = state["encoder"]["tokenizer"]["json"][:500]
        preprocess.write_text(json.dumps(state))
    finished = _generate(copy, "--prompt", "def ")
    assert finished.returncode == 2, finished.output[-2000:]
    (line,) = finished.output.strip().splitlines()
    assert line.startswith("error: ") and "preprocess.json" in line, line


def test_bits_per_byte_in_metrics_summary_and_report(lm_run):
    from scaletrain.report import write_report

    run_dir = Path(lm_run.run_dir)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    (val,) = [r for r in records if r.get("split") == "val"]
    bpb = val["metrics"]["bits_per_byte"]
    assert 0 < bpb < val["metrics"]["cross_entropy"] / math.log(2)  # BPE: > 1 byte per token
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["metrics"]["test"]["bits_per_byte"] > 0
    assert "bits_per_byte" in write_report(run_dir).read_text()


def test_tokens_per_s_is_samples_per_s_times_context(lm_run):
    records = [
        json.loads(line)
        for line in (Path(lm_run.run_dir) / "metrics.jsonl").read_text().splitlines()
    ]
    train = [r for r in records if r.get("split") == "train"]
    assert train
    for record in train:
        assert record["tokens_per_s"] == pytest.approx(record["samples_per_s"] * 32, rel=1e-12)
    summary = json.loads((Path(lm_run.run_dir) / "summary.json").read_text())
    expected = summary["train_samples_per_s"] * 32
    assert summary["train_tokens_per_s"] == pytest.approx(expected, rel=1e-12)
