"""Ensembles end to end: parallel members equal sequential ones bit for bit, the combined
run predicts and evaluates like a single run, and an interrupted ensemble resumes only its
unfinished members."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from distributed_helpers import child_env, kill_tree, start_cli

import scaletrain
from scaletrain.checkpoint.state_dict import model_state

pytestmark = pytest.mark.slow


def _config(out: Path, name: str, **ensemble) -> dict:
    return {
        "run": {"name": name, "seed": 0, "out_dir": str(out)},
        "data": {"source": "builtin", "name": "digits"},
        "model": {"name": "mlp", "hidden": [32]},
        "optim": {"name": "adamw", "lr": 0.01},
        "train": {"max_epochs": 2, "batch_size": 64, "precision": "32", "num_threads": 1},
        "log": {"progress": False, "tensorboard": False, "report": False},
        "ensemble": {"members": 2, **ensemble},
    }


def _member_weights(root: Path, index: int) -> dict:
    run = scaletrain.load_run(root / "members" / f"m{index}", checkpoint="last")
    return {key: value.clone() for key, value in model_state(run.model).items()}


def test_parallel_members_equal_sequential_members_bit_for_bit(tmp_path):
    sequential = scaletrain.train(_config(tmp_path, "seq", method="bagging"), nproc=1)
    parallel = scaletrain.train(_config(tmp_path, "par", method="bagging"), nproc=2)
    for index in range(2):
        first = _member_weights(sequential.run_dir, index)
        second = _member_weights(parallel.run_dir, index)
        assert first.keys() == second.keys()
        assert all(torch.equal(first[key], second[key]) for key in first), index
    first, second = (_member_weights(sequential.run_dir, i) for i in (0, 1))
    assert not all(torch.equal(first[key], second[key]) for key in first)  # own seeds
    assert sequential.metrics == parallel.metrics
    summary = json.loads((parallel.run_dir / "summary.json").read_text())
    assert summary["nproc"] == 2
    assert [r["action"] for r in summary["member_runs"]] == ["trained", "trained"]


def test_ensemble_run_predicts_and_evaluates_like_a_single_run(tmp_path):
    run = scaletrain.train(_config(tmp_path, "vote", method="voting", combine="vote"))
    assert isinstance(run.model, torch.nn.Module) and len(run.model.members) == 2
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert run.metrics == summary["ensemble"]
    reloaded = scaletrain.evaluate(run.run_dir)  # a directory: members' best weights
    assert reloaded["accuracy"] == pytest.approx(summary["ensemble"]["test"]["accuracy"])
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    inputs = images[:50].reshape(50, 1, 8, 8).astype(np.float32)
    probabilities = scaletrain.predict(run.run_dir, inputs)
    members = [scaletrain.load_run(run.run_dir / "members" / f"m{i}") for i in range(2)]
    votes = np.stack([member.predict(inputs).argmax(1) for member in members])
    expected = np.stack([(votes == label).mean(0) for label in range(10)], axis=1)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    commands = (
        ["eval", str(run.run_dir)],
        ["predict", str(run.run_dir), _npy(tmp_path)],
        ["export", str(run.run_dir)],
    )
    for command in commands:
        done = subprocess.run(
            [sys.executable, "-m", "scaletrain", *command],
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
    assert labels is not None
    from safetensors.torch import load_file

    exported = load_file(run.run_dir / "model.safetensors")  # members' best weights, no pickle
    loaded = scaletrain.load_run(run.run_dir).model.state_dict()
    assert exported.keys() == loaded.keys()
    assert all(torch.equal(exported[key], loaded[key]) for key in loaded)


def _npy(tmp_path: Path) -> str:
    from sklearn.datasets import load_digits

    path = tmp_path / "inputs.npy"
    np.save(path, load_digits().images[:5].reshape(5, 1, 8, 8).astype(np.float32))
    return str(path)


def _finished(root: Path) -> list[int]:
    done = []
    for index in range(3):
        summary = root / "members" / f"m{index}" / "summary.json"
        if summary.is_file() and json.loads(summary.read_text())["status"] == "finished":
            done.append(index)
    return done


def test_sigterm_mid_ensemble_then_resume_retrains_only_unfinished_members(tmp_path):
    config = _config(tmp_path, "ens", method="voting", members=3)
    config["train"]["max_epochs"] = 12
    path = tmp_path / "ens.yaml"
    path.write_text(yaml.safe_dump(config))
    root = tmp_path / "ens"
    first = start_cli("train", str(path))
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (
            _finished(root) and (root / "members" / "m1" / "metrics.jsonl").is_file()
        ):
            assert first.poll() is None, first.communicate()[0]
            time.sleep(0.2)
        first.send_signal(signal.SIGTERM)
        output = first.communicate(timeout=120)[0]
    finally:
        kill_tree(first.pid) if first.poll() is None else None
    assert first.returncode == 143, output
    kept = _finished(root)
    assert kept and len(kept) < 3, kept
    stamps = {i: (root / "members" / f"m{i}" / "summary.json").stat().st_mtime_ns for i in kept}
    assert json.loads((root / "summary.json").read_text())["status"] == "interrupted"

    second = start_cli("resume", str(root))
    output = second.communicate(timeout=600)[0]
    assert second.returncode == 0, output
    summary = json.loads((root / "summary.json").read_text())
    assert summary["status"] == "finished"
    actions = {run["index"]: run["action"] for run in summary["member_runs"]}
    assert {i for i, action in actions.items() if action == "kept"} == set(kept)
    assert all(actions[i] in ("resumed", "trained") for i in set(range(3)) - set(kept))
    for index, stamp in stamps.items():  # a finished member's files are left as they were
        assert (root / "members" / f"m{index}" / "summary.json").stat().st_mtime_ns == stamp


def test_snapshot_members_are_the_checkpoints_at_each_cycle_end(tmp_path):
    config = _config(tmp_path, "snap", method="snapshot", members=3)
    config["train"]["max_epochs"] = 6
    run = scaletrain.train(config)
    record = json.loads((run.run_dir / "ensemble.json").read_text())
    plan = json.loads((run.run_dir / "members" / "m0" / "plan.json").read_text())
    cycle = 2 * plan["steps_per_epoch"]
    assert [m["checkpoint"] for m in record["members"]] == [
        f"step_{cycle * c:08d}" for c in (1, 2, 3)
    ]
    lrs = {
        r["step"]: r["lr"]
        for r in map(json.loads, (run.run_dir / "members" / "m0" / "metrics.jsonl").open())
        if r.get("split") == "train"
    }
    # the lr logged at step s is the next update's: it is back at the top from step `cycle`
    restarted = min(step for step in lrs if step >= cycle)
    before = max(step for step in lrs if step < cycle)
    assert lrs[restarted] > 2 * lrs[before], (lrs, cycle)
    states = [model_state(member) for member in run.model.members]
    assert len(states) == 3 and not torch.equal(
        states[0]["output.weight"], states[2]["output.weight"]
    )
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and len(summary["members"]) == 3


def test_stacking_run_evaluates_predicts_and_exports_with_its_combiner(tmp_path):
    run = scaletrain.train(_config(tmp_path, "stack", method="stacking", combiner="mlp"))
    record = json.loads((run.run_dir / "ensemble.json").read_text())
    assert record["combine"] == "learned" and record["combiner"]["kind"] == "mlp"
    reloaded = scaletrain.load_run(run.run_dir)
    assert reloaded.model.combiner is not None
    summary = json.loads((run.run_dir / "summary.json").read_text())
    accuracy = scaletrain.evaluate(run.run_dir)["accuracy"]
    assert accuracy == pytest.approx(summary["ensemble"]["test"]["accuracy"])
    inputs = np.load(_npy(tmp_path))
    np.testing.assert_allclose(reloaded.predict(inputs), run.predict(inputs), atol=1e-6)
    done = subprocess.run(
        [sys.executable, "-m", "scaletrain", "export", str(run.run_dir)],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    from safetensors.torch import load_file

    exported = load_file(run.run_dir / "model.safetensors")
    loaded = reloaded.model.state_dict()
    assert exported.keys() == loaded.keys() and any(k.startswith("combiner.") for k in loaded)
    assert all(torch.equal(exported[key], loaded[key]) for key in loaded)


def test_boosting_rounds_follow_samme_on_the_members_own_predictions(tmp_path):
    from scaletrain.data import build_data
    from scaletrain.data.transforms.subsample import subsample_indices
    from scaletrain.ensemble.boosting import samme_round

    config = _config(tmp_path, "boost", method="boosting", members=3)
    config["ensemble"]["boosting"] = {"weights": "resample"}  # the default feeds the loss
    run = scaletrain.train(config)
    record = json.loads((run.run_dir / "ensemble.json").read_text())
    assert record["combine"] == "boosted" and len(record["weights"]) == 3
    bundle = build_data(run.config.data, seed=0)
    num_rows = len(bundle.train)
    weights = np.full(num_rows, 1 / num_rows)
    for index, member in enumerate(run.model.members):
        member_cfg = scaletrain.load_run(run.run_dir / "members" / f"m{index}").config
        stored = np.load(member_cfg.data.subsample.weights_file, allow_pickle=False)
        np.testing.assert_allclose(stored, weights, rtol=1e-12)  # the round's own weights
        rows = subsample_indices(num_rows, member_cfg.data.subsample)
        assert len(rows) == num_rows and len(np.unique(rows)) < num_rows  # resampled
        with torch.no_grad():
            correct = (member(bundle.train.inputs).argmax(1) == bundle.train.targets).numpy()
        expected = samme_round(weights, correct, num_classes=10)
        assert record["weights"][index] == pytest.approx(max(expected.alpha, 0.0))
        weights = expected.weights if expected.alpha > 1e-9 else weights
    assert run.metrics["test"]["accuracy"] > 0.5
