"""Evaluation on 2 ranks with an uneven split counts every sample once: equal to 1 process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from distributed_helpers import WORKERS, child_env, torchrun

pytestmark = pytest.mark.slow

# 131 samples: shards of 66 and 65; batch 8 -> 9 batches on rank 0, 9 on rank 1 would hide a
# deadlock, so batch 13: 6 batches (66) vs 5 batches (65): the ranks run different counts.
NUM_SAMPLES, BATCH_SIZE = 131, 13


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("eval")
    distributed, single = folder / "distributed.json", folder / "single.json"
    finished = torchrun(
        [str(WORKERS / "evaluate_uneven.py"), str(distributed), str(NUM_SAMPLES), str(BATCH_SIZE)],
        timeout=120,
    )
    assert finished.returncode == 0, finished.output
    # the single-process reference, in its own process (no torchrun environment)
    subprocess.run(
        [
            sys.executable,
            str(WORKERS / "evaluate_uneven.py"),
            str(single),
            str(NUM_SAMPLES),
            str(NUM_SAMPLES),
            "single",
        ],
        check=True,
        env=child_env(),
        timeout=120,
    )
    return {**json.loads(distributed.read_text()), **json.loads(single.read_text())}


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_uneven_split_equals_single_process(results, strategy):
    reference, candidate = results["single"], results[strategy]
    assert candidate["metrics"]["num_samples"] == NUM_SAMPLES
    assert candidate["metrics"]["confusion_matrix"] == reference["metrics"]["confusion_matrix"]
    assert sum(map(sum, candidate["metrics"]["confusion_matrix"])) == NUM_SAMPLES
    assert candidate["metrics"]["accuracy"] == reference["metrics"]["accuracy"]
    assert candidate["metrics"]["f1_macro"] == pytest.approx(
        reference["metrics"]["f1_macro"], abs=1e-12
    )
    # per-batch float32 means are summed in float64: batch boundaries differ from 1 process
    assert candidate["loss"] == pytest.approx(reference["loss"], rel=1e-6)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_gathered_predictions_are_in_sample_order(results, strategy):
    reference, candidate = results["single"]["predictions"], results[strategy]["predictions"]
    assert len(candidate["target"]) == NUM_SAMPLES
    assert candidate == reference
