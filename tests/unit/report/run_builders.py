"""Run directories written file by file, following the run-directory contract, and an HTML reader.

Predictions are real (scikit-learn models on digits and diabetes); the metric dicts are
computed by scaletrain's own MetricSets, as the training loop computes them, so a report
test checks the whole path predictions -> summary.json -> report.html against scikit-learn.
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_diabetes, load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, LogisticRegression

from scaletrain.config import load_config
from scaletrain.metrics import ClassificationMetrics, RegressionMetrics

NUM_STEPS = 60
LOG_EVERY = 10
EVAL_STEPS = (20, 40, 60)
PLAN = {
    "world_size": 1,
    "global_batch_size": 64,
    "micro_batch_size": 64,
    "grad_accum_steps": 1,
    "steps_per_epoch": 20,
    "total_steps": NUM_STEPS,
    "warmup_steps": 5,
    "device": "cpu",
    "precision": "32",
}


@dataclass(frozen=True)
class Predictions:
    """One split's arrays as ``predictions/<split>.npz`` holds them."""

    target: np.ndarray
    pred: np.ndarray
    input: np.ndarray | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        arrays = {"target": self.target, "pred": self.pred}
        if self.input is None:
            return arrays
        statistics = {"input_mean": np.array([4.9]), "input_std": np.array([6.0])}  # per channel
        return {**arrays, "input": self.input, **statistics}


@functools.cache
def digits_predictions() -> dict[str, Predictions]:
    """val/test predictions of a weak logistic regression on digits, inputs as (N, 1, 8, 8)."""
    features, labels = load_digits(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # stopped early: some mistakes
        model = LogisticRegression(max_iter=15).fit(features[:1200] / 16, labels[:1200])
    splits = {"val": slice(1200, 1450), "test": slice(1450, None)}
    return {
        name: Predictions(
            target=labels[rows].astype(np.int64),
            pred=model.predict(features[rows] / 16).astype(np.int64),
            input=((features[rows] - 4.9) / 6.0).reshape(-1, 1, 8, 8).astype(np.float32),
        )
        for name, rows in splits.items()
    }


@functools.cache
def diabetes_predictions() -> dict[str, Predictions]:
    features, targets = load_diabetes(return_X_y=True)
    model = LinearRegression().fit(features[:300], targets[:300])
    splits = {"val": slice(300, 370), "test": slice(370, None)}
    return {
        name: Predictions(target=targets[rows, None], pred=model.predict(features[rows])[:, None])
        for name, rows in splits.items()
    }


def classification_metrics(target: np.ndarray, pred: np.ndarray, num_classes: int) -> dict:
    """The metric dict the loop logs, from scaletrain's ClassificationMetrics."""
    metrics = ClassificationMetrics(num_classes)
    logits = torch.nn.functional.one_hot(torch.from_numpy(pred), num_classes).float()
    metrics.update(logits, torch.from_numpy(target))
    return metrics.compute()


def regression_metrics(target: np.ndarray, pred: np.ndarray) -> dict:
    metrics = RegressionMetrics()
    metrics.update(torch.from_numpy(pred), torch.from_numpy(target))
    return metrics.compute()


@dataclass
class RunSpec:
    """What to write: the task, final metrics per split and how the run ended."""

    name: str = "digits-run"
    task: str = "classification"
    metrics: dict[str, dict] = field(default_factory=dict)  # split -> metric dict
    predictions: dict[str, Predictions] = field(default_factory=dict)
    class_names: list[str] | None = None
    overrides: list[str] = field(default_factory=list)
    finished: bool = True
    truncated_last_line: bool = False
    seconds_per_step: float = 0.05
    train_epochs: bool = False  # a `train_epoch` record at the end of every epoch
    model_summary: dict | None = None  # written as model_summary.json when given


def digits_spec(**changes) -> RunSpec:
    predictions = digits_predictions()
    metrics = {
        split: {"loss": 0.3 + 0.1 * index, **classification_metrics(p.target, p.pred, 10)}
        for index, (split, p) in enumerate(predictions.items())
    }
    return RunSpec(metrics=metrics, predictions=predictions, **changes)


def diabetes_spec(**changes) -> RunSpec:
    predictions = diabetes_predictions()
    metrics = {split: regression_metrics(p.target, p.pred) for split, p in predictions.items()}
    metrics = {split: {"loss": values["mse"], **values} for split, values in metrics.items()}
    return RunSpec(
        name="diabetes-run", task="regression", metrics=metrics, predictions=predictions, **changes
    )


def write_run(root: Path, spec: RunSpec) -> Path:
    """Write config.yaml, plan.json, metrics.jsonl, summary.json and predictions/*.npz."""
    root.mkdir(parents=True)
    config = load_config({"run": {"name": spec.name}}, [*spec.overrides])
    (root / "config.yaml").write_text(config.to_yaml())
    (root / "plan.json").write_text(json.dumps(PLAN))
    lines = [json.dumps(record) for record in _records(spec)]
    text = "\n".join(lines) + "\n"
    if spec.truncated_last_line:
        text += lines[-1][: len(lines[-1]) // 2]  # the crash cut the last write short
    (root / "metrics.jsonl").write_text(text)
    if spec.predictions:
        (root / "predictions").mkdir()
        for split, predictions in spec.predictions.items():
            np.savez_compressed(root / "predictions" / f"{split}.npz", **predictions.arrays())
    if spec.finished:
        (root / "summary.json").write_text(json.dumps(_summary(spec)))
    if spec.model_summary is not None:
        (root / "model_summary.json").write_text(json.dumps(spec.model_summary))
    return root


def eval_metrics_at(spec: RunSpec, split: str, step: int) -> dict:
    """Evaluation records improve towards the final metrics (which the last one equals)."""
    final = spec.metrics[split]
    lag = (EVAL_STEPS[-1] - step) / 100  # 0 at the last evaluation
    changed = {key: value - lag for key, value in final.items() if key in ("accuracy", "f1_macro")}
    return {**final, **changed}


def _records(spec: RunSpec) -> list[dict]:
    """Train records every LOG_EVERY steps, a skip at 30, val + checkpoint at EVAL_STEPS."""
    records = []
    for step in range(LOG_EVERY, NUM_STEPS + 1, LOG_EVERY):
        time_s = step * spec.seconds_per_step
        records.append(_train_record(step, time_s))
        if spec.train_epochs and step % PLAN["steps_per_epoch"] == 0:
            records.append(train_epoch_record(spec, step, time_s))
        if step == 30:
            skip = {"event": "skip", "step": step, "time_s": time_s, "detail": "non-finite loss"}
            records.append(skip)
        if step in EVAL_STEPS and "val" in spec.metrics:
            val = dict(eval_metrics_at(spec, "val", step))
            loss = val.pop("loss") + (EVAL_STEPS[-1] - step) / 50
            base = {"step": step, "epoch": step // 20, "time_s": time_s + 0.01}
            records.append({"split": "val", **base, "loss": loss, "metrics": val})
            detail = f"every_epochs: step-{step:08d}"
            records.append({"event": "checkpoint", **base, "detail": detail})
    return records


def train_epoch_record(spec: RunSpec, step: int, time_s: float) -> dict:
    """What the loop logs at the end of an epoch: mean train loss, accuracy (or MAE)."""
    name = "accuracy" if spec.task == "classification" else "mae"
    return {
        "split": "train_epoch",
        "step": step,
        "epoch": (step - 1) // PLAN["steps_per_epoch"],
        "time_s": time_s,
        "loss": 2.0 * math.exp(-step / 25),
        "metrics": {name: 0.5 + step / 200 if name == "accuracy" else 60.0 - step / 4},
    }


def _train_record(step: int, time_s: float) -> dict:
    return {
        "split": "train",
        "step": step,
        "epoch": (step - 1) // 20,
        "time_s": time_s,
        "loss": 2.3 * math.exp(-step / 25),
        "lr": 0.01 * 0.5 * (1 + math.cos(math.pi * step / NUM_STEPS)),
        "grad_norm": 5.0 / step,
        "samples_per_s": 1000.0 + step,
        "mfu": None,
        "rss_mb": 300.0 + step,
    }


def _summary(spec: RunSpec) -> dict:
    return {
        "status": "finished",
        "name": spec.name,
        "task": spec.task,
        "class_names": spec.class_names,
        "wall_s": NUM_STEPS * spec.seconds_per_step + 0.5,
        "world_size": 1,
        "device": "cpu",
        "precision": "32",
        "versions": {"scaletrain": "0.1.0", "torch": "2.13.0", "python": "3.11.2"},
        "steps": NUM_STEPS,
        "epochs": 3,
        "best_step": NUM_STEPS,
        "best_metric": {"name": "val.loss", "value": 0.3},
        "metrics": spec.metrics,
        "train_samples_per_s": 1030.0,
        "peak_rss_mb": 360.0,
        "mfu": None,
        "overhead_fraction": 0.04,
        "counters": {"skipped_steps": 1, "rollbacks": 0, "restarts": 0},
    }


# --- reading the report back ------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    text: str
    value: float | None  # the full-precision number in data-value, if any


@dataclass
class Page:
    """What a test reads back from a page: ids, tables by id, resource references."""

    ids: set[str] = field(default_factory=set)
    tables: dict[str, list[list[Cell]]] = field(default_factory=dict)  # id -> rows of cells
    references: list[tuple[str, str, str]] = field(default_factory=list)  # (tag, attr, value)
    tags: list[str] = field(default_factory=list)


class _Reader(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._value: float | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.page.tags.append(tag)
        if "id" in attributes:
            self.page.ids.add(attributes["id"])
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "srcset", "data", "poster", "action"):
                self.page.references.append((tag, name, value or ""))
        if tag == "table":
            self._table = attributes.get("id", "")
            self.page.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.page.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
            value = attributes.get("data-value")
            self._value = float(value) if value is not None else None

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell).strip()
            self.page.tables[self._table][-1].append(Cell(text, self._value))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def read_page(text: str) -> Page:
    reader = _Reader()
    reader.feed(text)
    reader.close()
    return reader.page
