"""What a report needs, read from the files of a run directory and nothing else.

No torch and no training code are imported here: a report works on a copied run
directory and on a run that crashed, and ``scaletrain report`` starts in about a second.
Every number the report shows comes from ``summary.json``, ``metrics.jsonl`` or
``model_summary.json``; the prediction arrays only feed the scatter plot and the
misclassified examples.
"""

from __future__ import annotations

import itertools
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from scaletrain.errors import UserError
from scaletrain.fileio import read_jsonl, read_text_file
from scaletrain.rundir import RunDir, open_run_dir, read_json
from scaletrain.runfiles import checked_file, checked_records

STATUS_LABELS = {
    "finished": "finished",
    "stopped_early": "stopped early",
    "failed": "failed",
    "interrupted": "interrupted",
}
UNFINISHED = "interrupted/unfinished"  # no summary.json: the run is going on or died
# Records of training, not of an evaluation: per log window, and the mean over each epoch.
TRAIN_SPLITS = ("train", "train_epoch")


@dataclass(frozen=True)
class RunData:
    """The parsed files of one run directory (``summary`` is None for an unfinished run)."""

    root: Path
    config: dict[str, Any]
    config_text: str
    plan: dict[str, Any]
    summary: dict[str, Any] | None
    train: list[dict[str, Any]] = field(default_factory=list)
    train_epochs: list[dict[str, Any]] = field(default_factory=list)  # epoch-mean loss, metrics
    evals: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # split -> records
    events: list[dict[str, Any]] = field(default_factory=list)
    data_spec: dict[str, Any] = field(default_factory=dict)
    model_summary: dict[str, Any] | None = None  # None: written before model summaries existed
    parameter_server: dict[str, Any] | None = None  # async_ps: the servers' counts at the end

    @property
    def name(self) -> str:
        summary_name = (self.summary or {}).get("name")
        return str(summary_name or self.config.get("run", {}).get("name") or self.root.name)

    @property
    def status(self) -> str:
        if self.summary is None:
            return UNFINISHED
        status = str(self.summary.get("status", "unknown"))
        return STATUS_LABELS.get(status, status)

    @property
    def task(self) -> str | None:
        """classification or regression: from the summary, the data spec, else the metrics."""
        task = (self.summary or {}).get("task") or self.data_spec.get("task")
        if task:
            return str(task)
        for metrics in self.final_metrics().values():
            if "confusion_matrix" in metrics:
                return "classification"
            if "mse" in metrics:
                return "regression"
        return None

    @property
    def class_names(self) -> list[str] | None:
        names = (self.summary or {}).get("class_names") or self.data_spec.get("class_names")
        return [str(name) for name in names] if names else None

    def final_metrics(self) -> dict[str, dict[str, Any]]:
        """Metrics per split: the summary's, else the last evaluation logged for each split."""
        if self.summary and self.summary.get("metrics"):
            return dict(self.summary["metrics"])
        return {
            split: {"loss": records[-1].get("loss"), **(records[-1].get("metrics") or {})}
            for split, records in self.evals.items()
            if records
        }

    @property
    def steps(self) -> int | None:
        """Optimizer steps taken: the summary's count, else the last step logged."""
        if self.summary and self.summary.get("steps") is not None:
            return int(self.summary["steps"])
        steps = [r["step"] for r in self._records() if isinstance(r.get("step"), int)]
        return max(steps) if steps else None

    def last_time_s(self) -> float | None:
        """Seconds since the start at the last record: the wall time of an unfinished run."""
        times = [r["time_s"] for r in self._records() if isinstance(r.get("time_s"), (int, float))]
        return max(times) if times else None

    def _records(self) -> Iterator[dict[str, Any]]:
        return itertools.chain(self.train, self.train_epochs, self.events, *self.evals.values())

    def predictions(self, split: str) -> dict[str, np.ndarray] | None:
        """Arrays of ``predictions/<split>.npz`` (target, pred, maybe input), if written."""
        path = RunDir(self.root).predictions / f"{split}.npz"
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as arrays:
                return {key: arrays[key] for key in arrays.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            raise UserError(f"{path}: not a readable .npz file ({error})") from None


def read_run(path: str | Path) -> RunData:
    """Parse a run directory; UserError when it is missing or holds no config.yaml."""
    run = open_run_dir(path)
    config_text = read_text_file(run.config)
    try:
        config = yaml.safe_load(config_text) or {}
    except yaml.YAMLError as error:
        raise UserError(f"{run.config}: not valid YAML ({error})") from None
    except RecursionError:
        raise UserError(f"{run.config}: not valid YAML (nested too deeply)") from None
    records = checked_records(run.metrics, read_jsonl(run.metrics))  # [] before a first log
    evals: dict[str, list[dict]] = {}
    for record in records:
        if "event" not in record and record.get("split") not in (None, *TRAIN_SPLITS):
            evals.setdefault(str(record["split"]), []).append(record)
    spec_path = run.root / "data_spec.json"
    return RunData(
        root=run.root,
        config=config if isinstance(config, dict) else {},
        config_text=config_text,
        plan=_optional(run.plan, {}),
        summary=_optional(run.summary, None),
        train=[record for record in records if record.get("split") == "train"],
        train_epochs=[record for record in records if record.get("split") == "train_epoch"],
        evals=evals,
        events=[record for record in records if "event" in record],
        data_spec=_optional(spec_path, {}),
        model_summary=_optional(run.model_summary, None),
        parameter_server=next(
            (record["ps"] for record in reversed(records) if isinstance(record.get("ps"), dict)),
            None,
        ),
    )


def _optional(path: Path, default: Any) -> Any:
    """A JSON file the report can do without (an unfinished run has no summary.json yet);
    one that is there is checked, a folder or link to one in its place included."""
    if not (path.exists() or path.is_symlink()):
        return default
    return checked_file(path, read_json(path))


def scalar_names(metrics_by_split: dict[str, dict[str, Any]]) -> list[str]:
    """Metric names with a number in any split, in first-seen order (lists left out)."""
    names: dict[str, None] = {}
    for metrics in metrics_by_split.values():
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                names.setdefault(name, None)
    return list(names)
