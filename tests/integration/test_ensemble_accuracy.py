"""A 5-member ensemble beats its mean member on held-out data, on several seeds: on digits
(images) and on the built-in breast_cancer table (issue 17); stacking's learned combiner too. Members are small and trained
briefly, where averaging helps most; two worker processes train them."""

from __future__ import annotations

import json

import pytest

import scaletrain

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("dataset", "method", "epochs"),
    [("digits", "bagging", 2), ("breast_cancer", "voting", 1), ("digits", "stacking", 2)],
)
def test_five_members_beat_the_mean_member(tmp_path, dataset, method, epochs, seed):
    config = {
        "run": {"name": f"{dataset}-{seed}", "seed": seed, "out_dir": str(tmp_path)},
        "data": {"source": "builtin", "name": dataset},
        "model": {"name": "mlp", "hidden": [16]},
        "optim": {"name": "adamw", "lr": 0.003},
        "train": {"max_epochs": epochs, "batch_size": 32, "precision": "32", "num_threads": 1},
        "log": {"progress": False, "tensorboard": False, "report": False},
        "ensemble": {"method": method, "members": 5},
    }
    run = scaletrain.train(config, nproc=2)
    summary = json.loads((run.run_dir / "summary.json").read_text())
    ensemble = summary["ensemble"]["test"]
    members = [member["test"]["accuracy"] for member in summary["members"]]
    assert ensemble["accuracy"] > sum(members) / 5, (ensemble["accuracy"], members)
    assert ensemble["loss"] < summary["mean_member"]["test"]["loss"]
    assert summary["diversity"]["test"]["disagreement"] > 0
