"""One trial: sample its values, train a normal run directory (here, or as a
`scaletrain train --nproc M` job), and say how it ended."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass

from scaletrain.errors import UserError
from scaletrain.tune.reporter import TrialReporter, metric_value
from scaletrain.tune.space import SearchSpace, overrides_for
from scaletrain.tune.study import StudyDir, StudySettings


@dataclass(frozen=True)
class TrialOutcome:
    state: str  # COMPLETE | PRUNED | FAIL
    value: float | None = None
    error: str | None = None


def run_trial(trial, study_dir: StudyDir, settings: StudySettings, space: SearchSpace):
    """Train the trial's run in `trials/<number>/`; a refused config is a FAIL, not a crash."""
    values = space.sample(trial)
    trial.set_user_attr("worker_pid", os.getpid())
    overrides = [
        *overrides_for(values),
        f"run.out_dir={study_dir.trials}",
        f"run.name={trial.number}",
        "log.progress=false",  # trials run side by side: their bars would interleave
    ]
    try:
        if settings.trial_nproc > 1:
            _train_job(study_dir, trial.number, overrides, nproc=settings.trial_nproc)
        else:
            _train_here(study_dir, trial, overrides, metric=settings.metric)
    except UserError as exc:
        return TrialOutcome("FAIL", error=str(exc))
    if "pruned_at_step" in trial.user_attrs:  # read back: rank 0 of a job set it
        return TrialOutcome("PRUNED")
    summary = json.loads((study_dir.trial_dir(trial.number) / "summary.json").read_text())
    if summary.get("status") == "interrupted":  # Ctrl-C/SIGTERM: left running, so a
        raise KeyboardInterrupt  # `tune --resume` runs it again
    if summary.get("status") not in ("finished", "stopped_early"):
        return TrialOutcome("FAIL", error=f"run {summary.get('status')}")
    if "val" not in summary.get("metrics", {}):
        raise UserError("tune: the runs have no validation split to score (data.val_fraction)")
    return TrialOutcome("COMPLETE", metric_value(summary["metrics"]["val"], settings.metric))


def _train_here(study_dir: StudyDir, trial, overrides: list[str], *, metric: str) -> None:
    from scaletrain import api
    from scaletrain.choices import ConfigNote

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigNote)  # a switched choice is what the space asked
        api.train(
            study_dir.config,
            overrides=overrides,
            overwrite=True,  # a retried trial number never exists; a stale folder may
            callbacks=[TrialReporter(trial, metric)],
        )


def _train_job(study_dir: StudyDir, number: int, overrides: list[str], *, nproc: int) -> None:
    """`scaletrain train CONFIG --nproc M --tune-trial DIR:N`: every rank sees the same
    values (the same command line); rank 0 reports to the study."""
    log = study_dir.root / "logs" / f"trial_{number}.log"
    log.parent.mkdir(exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "scaletrain",
        "train",
        str(study_dir.config),
        "--nproc",
        str(nproc),
        "--overwrite",
        "--tune-trial",
        f"{study_dir.root}:{number}",
        *overrides,
    ]
    with open(log, "w") as out:
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        lines = log.read_text().strip().splitlines()
        raise UserError(f"trial {number}: exit {code}: {lines[-1] if lines else '(no output)'}")
