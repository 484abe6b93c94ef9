"""A study's results as files: trials.csv / trials.json (one row per trial), best.yaml (a
ready config with the best values) and report.html."""

from __future__ import annotations

import csv
import io
import warnings

from scaletrain.choices import ConfigNote
from scaletrain.config import load_config
from scaletrain.fileio import atomic_write_json, atomic_write_text
from scaletrain.tune.space import overrides_for
from scaletrain.tune.study import StudyDir, StudySettings

FIXED_COLUMNS = ["number", "state", "value", "duration_s", "run_dir", "worker_pid", "retry_of"]


def trial_rows(study, study_dir: StudyDir) -> list[dict]:
    """One plain dict per trial, in number order."""
    rows = []
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        duration = trial.duration.total_seconds() if trial.duration else None
        run_dir = study_dir.trial_dir(trial.number)
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name.lower(),
                "value": trial.value,
                "duration_s": round(duration, 3) if duration is not None else None,
                "run_dir": str(run_dir) if run_dir.is_dir() else None,
                "worker_pid": trial.user_attrs.get("worker_pid"),
                "retry_of": trial.user_attrs.get("retry_of"),
                "error": trial.user_attrs.get("error"),
                "params": dict(trial.params),
            }
        )
    return rows


def write_outputs(study, study_dir: StudyDir, settings: StudySettings) -> None:
    from scaletrain.tune.report import write_report

    rows = trial_rows(study, study_dir)
    atomic_write_json(
        study_dir.trials_json, {"metric": settings.metric, "mode": settings.mode, "trials": rows}
    )
    atomic_write_text(study_dir.trials_csv, _csv(rows))
    best = _best(study)
    if best is not None:
        atomic_write_text(study_dir.best, best_config_yaml(study_dir, best, settings))
    write_report(study, study_dir, settings, rows)


def best_config_yaml(study_dir: StudyDir, best, settings: StudySettings) -> str:
    """The study's config with the best trial's values: `scaletrain train best.yaml`."""
    name = load_config(study_dir.config).run.name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigNote)
        cfg = load_config(study_dir.config, [*overrides_for(best.params), f"run.name={name}-best"])
    header = (
        f"# best of the study {study_dir.root}: trial {best.number}, "
        f"{settings.metric} = {best.value:.6g}\n# values: "
        + ", ".join(f"{key}={value}" for key, value in best.params.items())
        + "\n"
    )
    return header + cfg.to_yaml()


def _csv(rows: list[dict]) -> str:
    keys = sorted({key for row in rows for key in row["params"]})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*FIXED_COLUMNS, *keys, "error"])
    for row in rows:
        cells = [row[column] for column in FIXED_COLUMNS]
        cells += [row["params"].get(key) for key in keys]
        writer.writerow(["" if cell is None else cell for cell in [*cells, row["error"]]])
    return out.getvalue()


def _best(study):
    try:
        return study.best_trial
    except ValueError:
        return None
