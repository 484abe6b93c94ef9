"""`scaletrain tune` end to end with real processes: a study SIGKILLed mid-way and resumed,
two parallel workers, a trial that is itself a 2-process DDP job; `scaletrain lr-find`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml
from distributed_helpers import descendants, run, start_cli

NUM_TRIALS = 4


def tiny_config(tmp_path: Path) -> Path:
    """Digits on a small MLP for 2 epochs: a trial takes about a second."""
    config = {
        "run": {"name": "tiny", "seed": 0, "out_dir": str(tmp_path / "runs")},
        "data": {"source": "builtin", "name": "digits"},
        "model": {"name": "mlp", "hidden": [32]},
        "optim": {"name": "adamw", "lr": 0.01},
        "train": {"max_epochs": 2, "batch_size": 64, "precision": "bf16-mixed", "num_threads": 1},
        "checkpoint": {"every_epochs": 0, "save_best": False},
        "log": {"progress": False, "tensorboard": False, "report": False},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def space_file(tmp_path: Path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "optim.lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
                "model.dropout": {"type": "float", "low": 0.0, "high": 0.3},
            }
        )
    )
    return path


def trials_of(study: Path) -> list[dict]:
    return json.loads((study / "trials.json").read_text())["trials"]


def kill_all(pid: int) -> None:
    """SIGKILL the tune process and every process below it at once: a crash, no cleanup."""
    for each in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)


@pytest.mark.slow
def test_a_study_killed_mid_way_resumes_to_exactly_n_trials_with_2_workers(tmp_path):
    study = tmp_path / "study"
    process = start_cli(
        "tune", str(tiny_config(tmp_path)), "--space", str(space_file(tmp_path)),
        "--trials", str(NUM_TRIALS), "--parallel", "2", "--pruner", "none", "--out", str(study),
    )  # fmt: skip
    try:  # kill once one trial finished and another is under way
        deadline = time.time() + 120
        while time.time() < deadline:
            runs = list((study / "trials").glob("*"))
            done = [r for r in runs if (r / "summary.json").exists()]
            running = [r for r in runs if r not in done and (r / "metrics.jsonl").exists()]
            if done and running:
                finished_before = {int(r.name) for r in done}
                break
            assert process.poll() is None, process.communicate()[0]
            time.sleep(0.05)
        else:
            raise AssertionError("no trial finished in time")
    finally:
        kill_all(process.pid)
        process.communicate()
    finished = run(
        [sys.executable, "-m", "scaletrain", "tune", "--resume", str(study)], timeout=180
    )
    assert finished.returncode == 0, finished.output
    trials = trials_of(study)
    numbers = [t["number"] for t in trials]
    assert len(numbers) == len(set(numbers))  # no trial number twice
    complete = [t for t in trials if t["state"] == "complete"]
    failed = [t for t in trials if t["state"] == "fail"]
    assert len(complete) == NUM_TRIALS
    assert failed, "the killed trial was left running, then marked failed"
    retries = {t["retry_of"]: t for t in complete if t["retry_of"] is not None}
    for dead in failed:  # each interrupted trial ran again with the same values
        retry = retries[dead["number"]]["params"]  # (a trial killed while sampling has
        assert {key: retry[key] for key in dead["params"]} == dead["params"]  # some values)
        assert not (study / "trials" / str(dead["number"])).exists()
    # a trial finished before the kill is kept as it was, not run again
    assert finished_before <= {t["number"] for t in complete}
    assert not finished_before & set(retries)
    # both workers trained; each trial's run directory is its own
    assert len({t["worker_pid"] for t in complete}) >= 2
    for trial in complete:
        config = yaml.safe_load(
            (study / "trials" / str(trial["number"]) / "config.yaml").read_text()
        )
        assert config["run"]["name"] == str(trial["number"])
        assert config["optim"]["lr"] == pytest.approx(trial["params"]["optim.lr"])
    assert "best value" in finished.output and (study / "best.yaml").is_file()
    best = yaml.safe_load((study / "best.yaml").read_text())
    top = max(complete, key=lambda t: t["value"])
    assert best["optim"]["lr"] == pytest.approx(top["params"]["optim.lr"])
    assert (study / "report.html").read_text().count("data:image/png") >= 3


@pytest.mark.slow
def test_a_trial_with_trial_nproc_2_is_a_ddp_job_whose_rank_0_reports(tmp_path):
    import optuna

    study = tmp_path / "study"
    finished = run(
        [
            sys.executable, "-m", "scaletrain", "tune", str(tiny_config(tmp_path)),
            "--space", str(space_file(tmp_path)), "--trials", "1", "--trial-nproc", "2",
            "--out", str(study),
        ],
        timeout=240,
    )  # fmt: skip
    assert finished.returncode == 0, finished.output
    (trial,) = trials_of(study)
    assert trial["state"] == "complete"
    run_dir = study / "trials" / "0"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert trial["value"] == pytest.approx(summary["metrics"]["val"]["accuracy"])
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["optim"]["lr"] == pytest.approx(trial["params"]["optim.lr"])
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study / "journal.log"))
    )
    (frozen,) = optuna.load_study(study_name="scaletrain", storage=storage).trials
    # one intermediate value per validation (2 epochs), reported once: by rank 0 alone
    validations = [
        json.loads(line)
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if json.loads(line).get("split") == "val"
    ]
    assert sorted(frozen.intermediate_values) == [v["step"] for v in validations]
    assert len(validations) == 2
