"""Pipeline parallelism on 2 gloo processes trains a tiny GPT as one process does.

Each schedule (gpipe, 1f1b, interleaved_1f1b with 2 stages per rank) gives the loss curve of
the single-process run step for step (fp32: loss rel 1e-5, abs 1e-6; grad norm rel 1e-4:
the sums only change order; Adam would hide a gradient scaled by a constant, the norm does
not), and the same final weights (abs 5e-5 after 12 Adam steps). Accumulation with clipping too (the global grad norm
crosses stages). An epoch ends on a short batch, which the pipeline cuts into fewer pieces.
A checkpoint written by 2 stages resumes in one process, and one of a single process resumes
as 2 stages, each continuing as the uninterrupted run does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from distributed_helpers import load_weights, torchrun, train_variants
from pipeline_curves import (
    assert_resumed_as,
    assert_same_curve,
    cut_back,
    records,
    write_word_corpus,
)

from scaletrain import api

pytestmark = pytest.mark.slow

MAX_STEPS, SAVED_AT, BATCH = 12, 5, 8
VARIANTS = {
    "pp_gpipe": "parallel.strategy=pp,parallel.pp.schedule=gpipe",
    "pp_1f1b": "parallel.strategy=pp,parallel.pp.schedule=1f1b",
    "pp_interleaved": (
        "parallel.strategy=pp,parallel.pp.schedule=interleaved_1f1b,parallel.pp.stages_per_rank=2"
    ),
}
ACCUMULATE_CLIP = "train.micro_batch_size=4,optim.clip.mode=norm,optim.clip.max=0.3"


def _config(corpus: Path) -> dict:
    return {
        "run": {"seed": 7},
        "data": {
            "source": "text_corpus",
            "path": str(corpus),
            "task": "language_model",
            "context_length": 16,
            "text": {"vectorizer": "byte"},
        },
        "model": {
            "name": "gpt",
            "n_layer": 4,
            "n_head": 2,
            "d_model": 32,
            "tie_weights": False,
        },
        "optim": {"name": "adamw", "lr": 0.01, "schedule": {"name": "cosine"}},
        "train": {
            "max_steps": MAX_STEPS,
            "batch_size": BATCH,
            "precision": "32",
            "device": "cpu",
        },
        "checkpoint": {
            "every_steps": SAVED_AT,
            "every_epochs": 0,
            "save_best": False,
            "keep_last": 5,
        },
        "log": {"every_steps": 1, "progress": False, "tensorboard": False, "report": False},
    }


WORDS = ["def", "x", "return", "(", ")", ":", "import", "os", "self", "=", "1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("pp")
    write_word_corpus(out / "corpus", WORDS, seed=0, files=12, width=8)
    config = _config(out / "corpus")
    specs = [f"{name}={overrides}" for name, overrides in VARIANTS.items()]
    specs.append(
        f"pp_accumulate_clip=parallel.strategy=pp,parallel.pp.microbatches=2,{ACCUMULATE_CLIP}"
    )
    output = train_variants(out, config, specs, timeout=400)
    for name, overrides in {
        "single": [],
        "single_accumulate_clip": ACCUMULATE_CLIP.split(","),
    }.items():
        api.train(
            {**config, "run": {"seed": 7, "name": name, "out_dir": str(out)}}, overrides=overrides
        )
    return {"out": out, "config": config, "output": output}


def test_an_epoch_ends_on_a_short_batch(runs):
    plan = json.loads((runs["out"] / "single" / "plan.json").read_text())
    assert plan["num_train_samples"] % BATCH and plan["steps_per_epoch"] < MAX_STEPS


@pytest.mark.parametrize("name", VARIANTS)
def test_each_schedule_matches_one_process(runs, name):
    out = runs["out"]
    assert_same_curve(out / name, out / "single", max_steps=MAX_STEPS)
    reference, candidate = load_weights(out / "single"), load_weights(out / name)
    assert reference.keys() == candidate.keys()
    for key in reference:  # Adam divides by sqrt(v): tiny gradients' rounding shows more
        torch.testing.assert_close(candidate[key], reference[key], rtol=1e-4, atol=5e-5, msg=key)
    summary = json.loads((out / name / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "finished"


def test_each_pipeline_run_plans_and_measures_its_memory(runs):
    """Rank 0 (stage 0) prints its row of `scaletrain plan` beside its measured peak, and
    the summary records both, as every other strategy's run does."""
    for name, overrides in VARIANTS.items():
        schedule = overrides.split("schedule=")[1].split(",")[0]
        memory = json.loads((runs["out"] / name / "summary.json").read_text())["memory"]
        assert memory["strategy"] == f"pp-{schedule} rank 0"
        assert memory["estimate_mb"] > 0 and memory["measured_peak_mb"] > 0
        assert memory["estimate"]["activations"] > 0  # measured on the run's micro batch
        assert f"memory per rank (pp-{schedule} rank 0): planned " in runs["output"]
    assert "measured peak" in runs["output"] and "planner error" in runs["output"]


def test_accumulation_and_clipping_match_one_process(runs):
    out = runs["out"]
    assert_same_curve(
        out / "pp_accumulate_clip", out / "single_accumulate_clip", max_steps=MAX_STEPS
    )
    norms = [r["grad_norm"] for r in records(out / "single_accumulate_clip", "train").values()]
    assert max(norms) > 0.3  # clipping acted: the global norm had to cross the stages


def test_two_stage_checkpoint_resumes_in_one_process(runs, tmp_path):
    single = {"strategy": "single", "pp": {}}
    resumed = cut_back(
        runs["out"] / "pp_1f1b", tmp_path / "to_single", saved_at=SAVED_AT, parallel=single
    )
    api.resume(resumed)
    assert_resumed_as(resumed, runs["out"] / "single", max_steps=MAX_STEPS, world_size=1)


def test_one_process_checkpoint_resumes_as_two_stages(runs, tmp_path):
    pipeline = {"strategy": "pp", "pp": {"schedule": "gpipe"}}
    resumed = cut_back(
        runs["out"] / "single", tmp_path / "to_pp", saved_at=SAVED_AT, parallel=pipeline
    )
    finished = torchrun(["-m", "scaletrain", "resume", str(resumed)], nproc=2, timeout=240)
    assert finished.returncode == 0, finished.output
    assert_resumed_as(resumed, runs["out"] / "single", max_steps=MAX_STEPS, world_size=2)
