"""A `gpt` sequence classifier under pipeline stages trains as one process does.

The head pools over the non-padding tokens, whose ids only the first stage embeds: every
stage's forward also receives the piece's token ids as a keyword (the schedule splits and
passes `step`'s kwargs), and the last stage pools with them. The texts are 1 to 12 words,
padded to 48 bytes, so a pooling that ignored the mask gives other losses (checked: the
test fails with the token ids withheld from the last stage).
"""

from __future__ import annotations

import csv
import json
import random

import pytest
from distributed_helpers import train_variants
from pipeline_curves import assert_same_curve

from scaletrain import api

pytestmark = pytest.mark.slow

MAX_STEPS = 6
CONFIG = {
    "run": {"seed": 3},
    "data": {
        "source": "text_csv",
        "label": "label",
        "text": {"vectorizer": "byte", "max_length": 48, "column": "text"},  # no tokenizer
    },
    "model": {"name": "gpt", "n_layer": 4, "n_head": 2, "d_model": 32, "tie_weights": False},
    "optim": {"name": "adamw", "lr": 0.01},
    "train": {"max_steps": MAX_STEPS, "batch_size": 8, "precision": "32", "device": "cpu"},
    "checkpoint": {"keep_last": 1},
    "log": {"every_steps": 1, "progress": False, "tensorboard": False, "report": False},
}
VARIANTS = {
    "pp_1f1b": "parallel.strategy=pp,parallel.pp.schedule=1f1b,parallel.pp.microbatches=2",
    "pp_interleaved": (
        "parallel.strategy=pp,parallel.pp.schedule=interleaved_1f1b,"
        "parallel.pp.stages_per_rank=2,parallel.pp.microbatches=4"
    ),
}


WORDS = ["def", "return", "import", "class", "self", "for", "in", "if", "else", "pass"]


def write_texts(path) -> None:
    """Short texts of varying length; the label: whether `def` is among the words."""
    rng = random.Random(0)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for _ in range(160):
            words = [rng.choice(WORDS) for _ in range(rng.randint(1, 12))]
            writer.writerow([" ".join(words), "def" if "def" in words else "other"])


def test_classifier_stages_match_one_process(tmp_path):
    write_texts(tmp_path / "texts.csv")
    config = {**CONFIG, "data": {**CONFIG["data"], "path": str(tmp_path / "texts.csv")}}
    specs = [f"{name}={overrides}" for name, overrides in VARIANTS.items()]
    # bf16 autocast through the stages (what `auto` picks on AMX machines): it trains
    specs.append(f"pp_bf16={VARIANTS['pp_1f1b']},train.precision=bf16-mixed")
    train_variants(tmp_path, config, specs, timeout=400)
    api.train({**config, "run": {"seed": 3, "name": "single", "out_dir": str(tmp_path)}})
    single = json.loads((tmp_path / "single" / "summary.json").read_text())
    assert single["task"] == "classification"
    for name in VARIANTS:
        assert_same_curve(tmp_path / name, tmp_path / "single", max_steps=MAX_STEPS)
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["world_size"] == 2 and summary["status"] == "finished"
        test_metrics = summary["metrics"]["test"]
        assert test_metrics["accuracy"] == pytest.approx(single["metrics"]["test"]["accuracy"])
    bf16 = json.loads((tmp_path / "pp_bf16" / "summary.json").read_text())
    assert bf16["status"] == "finished" and 0.0 <= bf16["metrics"]["test"]["accuracy"] <= 1.0
    assert bf16["memory"]["strategy"] == "pp-1f1b rank 0"  # the run planned its own rank
