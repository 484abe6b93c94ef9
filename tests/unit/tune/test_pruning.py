"""Pruning: the reporter against Optuna's median rule, and the loop's on_validation stop."""

from __future__ import annotations

import json
from types import SimpleNamespace

import optuna

import scaletrain
from scaletrain.tune.reporter import TrialReporter
from scaletrain.tune.study import build_pruner


def validation(accuracy: float) -> dict:
    return {"split": "val", "loss": 1 - accuracy, "metrics": {"accuracy": accuracy}}


def report_curve(study, curve: list[float]) -> tuple[bool, int]:
    """Feed one trial's per-validation accuracies; (stopped, validations seen)."""
    trial = study.ask()
    reporter = TrialReporter(trial, "val.accuracy")
    for step, accuracy in enumerate(curve, start=1):
        if reporter.on_validation(SimpleNamespace(step=step * 10), validation(accuracy)):
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return True, step
    study.tell(trial, curve[-1])
    return False, len(curve)


def test_a_trial_worse_than_the_median_is_pruned_and_a_better_one_is_not():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=build_pruner("median"))
    for curve in ([0.5, 0.7, 0.8], [0.6, 0.8, 0.9]):  # the startup trials: never pruned
        assert report_curve(study, curve) == (False, 3)
    assert report_curve(study, [0.3, 0.4, 0.5]) == (True, 1)  # below the median at once
    assert report_curve(study, [0.6, 0.85, 0.95]) == (False, 3)  # above it throughout
    assert report_curve(study, [0.6, 0.6, 0.9]) == (True, 2)  # falls below at the 2nd
    pruned = study.get_trials(states=(optuna.trial.TrialState.PRUNED,))
    assert [t.user_attrs["pruned_at_step"] for t in pruned] == [10, 20]
    assert [t.number for t in pruned] == [2, 4]


def test_a_ranks_other_than_0_neither_report_nor_stop():
    study = optuna.create_study(direction="maximize", pruner=build_pruner("median"))
    trial = study.ask()
    reporter = TrialReporter(trial, "val.accuracy", is_main=False)
    assert reporter.on_validation(SimpleNamespace(step=1), validation(0.0)) is False
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {}


class StopAtFirstValidation:
    def __init__(self):
        self.records = []

    def on_validation(self, state, record):
        self.records.append((state.step, record["split"], record["metrics"]["accuracy"]))
        return True


def test_a_callback_that_asks_stops_training_after_that_validation(tiny_config):
    callback = StopAtFirstValidation()
    tiny_config["train"].update(max_epochs=4, num_threads=1)  # 2 shared cores: 1 thread
    run = scaletrain.train(tiny_config, callbacks=[callback])
    summary = json.loads((run.run_dir / "summary.json").read_text())
    steps_per_epoch = summary["steps"]
    assert summary["status"] == "stopped_early"
    assert summary["epochs"] == 1  # of 4
    assert [(step, split) for step, split, _ in callback.records] == [(steps_per_epoch, "val")]
    events = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "callback_stop" for e in events)
