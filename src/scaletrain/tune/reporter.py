"""The pruning hook: each validation's metric reported to the study as an intermediate value
(rank 0 only), and training stopped where the pruner says so."""

from __future__ import annotations

from pathlib import Path

from scaletrain.errors import UserError


def metric_value(metrics: dict, metric: str) -> float:
    """`val.loss` or `val.NAME` from a validation record (or summary) of one split."""
    name = metric.split(".", 1)[1]
    if name == "loss":
        return float(metrics["loss"])
    values = metrics.get("metrics", metrics)
    if name not in values:
        known = ", ".join(
            f"val.{key}" for key in ["loss", *values] if not isinstance(values.get(key), dict)
        )
        raise UserError(f"--metric {metric}: the run has no such metric (it has: {known})")
    return float(values[name])


class TrialReporter:
    """A train callback: `on_validation` reports to the trial, True asks the loop to stop."""

    def __init__(self, trial, metric: str, *, is_main: bool = True):
        self.trial, self.metric, self.is_main = trial, metric, is_main

    def on_validation(self, state, record: dict) -> bool:
        if not self.is_main:  # the ranks agree in the loop: only rank 0 talks to the study
            return False
        self.trial.report(metric_value(record, self.metric), step=state.step)
        if self.trial.should_prune():
            self.trial.set_user_attr("pruned_at_step", state.step)
            return True
        return False


def remote_reporter(spec: str, metric: str | None = None) -> TrialReporter:
    """`--tune-trial STUDY_DIR:NUMBER` of a `scaletrain train --nproc M` trial: every rank
    builds it, rank 0 opens the study's journal and reports to that trial."""
    from optuna.trial import Trial

    from scaletrain.parallel.env import read_launch_env
    from scaletrain.tune.study import StudyDir, load_study

    root, _, number = spec.rpartition(":")
    study_dir = StudyDir(root)
    settings = study_dir.read_settings()
    is_main = read_launch_env().rank == 0
    if not is_main:
        return TrialReporter(None, settings.metric, is_main=False)
    study = load_study(study_dir, settings)
    trials = [t for t in study.get_trials(deepcopy=False) if t.number == int(number)]
    if not trials or not Path(root).is_dir():
        raise UserError(f"--tune-trial {spec}: no such trial in the study")
    return TrialReporter(Trial(study, trials[0]._trial_id), settings.metric)
