"""`configs/gpt-stdlib.yaml`, shrunk by overrides, trains through the CLI: one process, and
two processes under DDP and FSDP (GPTBlock is the FSDP unit); validation writes perplexity."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from distributed_helpers import child_env, run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SHRUNK = [
    "model.n_layer=2",
    "model.d_model=32",
    "model.n_head=2",
    "data.context_length=32",
    "data.text.vocab_size=512",
    "train.max_steps=8",
    "optim.lr=1e-2",  # a tiny model: a visible drop in 8 steps
    "train.batch_size=16",
    "train.eval_every_steps=8",
    "train.precision=bf16-mixed",
    "train.device=cpu",
    "log.every_steps=1",
    "log.progress=false",
    "log.tensorboard=false",
    "log.report=false",
]


def _train(out: Path, *extra: str) -> list[dict]:
    command = [sys.executable, "-m", "scaletrain", "train", str(ROOT / "configs/gpt-stdlib.yaml")]
    finished = run([*command, "--out", str(out), *SHRUNK, *extra], timeout=400, env=child_env())
    assert finished.returncode == 0, finished.output[-3000:]
    (metrics_file,) = out.glob("*/metrics.jsonl")
    return [json.loads(line) for line in metrics_file.read_text().splitlines()]


@pytest.mark.parametrize(
    "launch",
    [(), ("--nproc", "2", "parallel.strategy=ddp"), ("--nproc", "2", "parallel.strategy=fsdp")],
    ids=["single", "ddp", "fsdp"],
)
def test_gpt_stdlib_trains_and_writes_perplexity(tmp_path, launch):
    records = _train(tmp_path, *launch)
    train = [r["loss"] for r in records if r.get("split") == "train" and "loss" in r]
    assert len(train) == 8 and train[-1] < train[0] - 0.2, train
    (val,) = [r for r in records if r.get("split") == "val"]
    perplexity = val["metrics"]["perplexity"]
    assert perplexity == pytest.approx(math.exp(val["loss"]), rel=1e-6)
    assert perplexity < 512  # below a uniform guess over the 512-token vocabulary


def test_window_longer_than_context_is_one_line(tmp_path):
    command = [sys.executable, "-m", "scaletrain", "train", str(ROOT / "configs/gpt-stdlib.yaml")]
    command += ["--out", str(tmp_path), *SHRUNK, "model.context=16"]
    finished = run(command, timeout=200, env=child_env())
    assert finished.returncode == 2
    lines = finished.output.strip().splitlines()
    assert lines[-1].startswith("error: model.context: the data's windows are 32 tokens"), lines
    assert not list(tmp_path.glob("*/metrics.jsonl"))  # no half-written run directory
