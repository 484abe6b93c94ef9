"""Classification metrics (torchmetrics), defined to match scikit-learn.

Zero division follows scikit-learn's ``zero_division=0``: the precision of a class that is
never predicted, the recall of a class that never occurs, and the F1 of a class with
neither true nor predicted samples are 0.0 (scikit-learn warns; we stay silent).
Macro averages run over the classes present in the targets or predictions (a class absent
from both is skipped), as scikit-learn does when ``labels`` is not given; weighted
averages weight by support. ``per_class`` lists hold one entry per class id ``0..C-1``.

``update`` keeps the argmax predictions on the device and only feeds torchmetrics inside
``compute``: torchmetrics counts with ``torch.bincount``, which waits for the GPU
(a host sync), so deferring it keeps evaluation batches sync-free.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from scaletrain.errors import DataError
from scaletrain.metrics.metric_set import METRIC_OPTIONS, MetricSet

CLASSIFICATION_METRICS = (
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "precision_weighted",
    "recall_weighted",
    "f1_weighted",
    "per_class",
    "confusion_matrix",
    "num_samples",
)

_SCORES = {"precision": MulticlassPrecision, "recall": MulticlassRecall, "f1": MulticlassF1Score}
# Buffered predictions are fed to torchmetrics once this many samples wait (one sync each).
_MAX_BUFFERED_SAMPLES = 1 << 20
_OPTIONS = {**METRIC_OPTIONS, "validate_args": False}  # targets are checked once in _flush


class ClassificationMetrics(MetricSet):
    """Accuracy, precision/recall/F1 (macro, weighted, per class) and the confusion matrix."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        metrics = {
            "accuracy": _float64(MulticlassAccuracy(num_classes, average="micro", **_OPTIONS))
        }
        for name, score_class in _SCORES.items():
            for average in ("macro", "weighted", "none"):
                metric = score_class(num_classes, average=average, zero_division=0, **_OPTIONS)
                metrics[f"{name}_{average}"] = _float64(metric)
        metrics["confusion_matrix"] = MulticlassConfusionMatrix(num_classes, **_OPTIONS)
        super().__init__(metrics)
        self._predictions: list[Tensor] = []
        self._targets: list[Tensor] = []
        self._num_buffered = 0

    def update(self, output: Tensor, target: Tensor) -> None:
        """Buffer one batch: logits (B, C), or (B, 1) binary logits, and class ids (B,)."""
        output = output.detach()
        if output.shape[-1] == 1:  # one binary logit: class 1 where it is positive
            predictions = (output[..., 0] > 0).long()
        else:
            predictions = output.argmax(dim=-1)
        self._predictions.append(predictions.reshape(-1))
        self._targets.append(target.detach().reshape(-1).long())
        self._num_buffered += target.numel()
        if self._num_buffered >= _MAX_BUFFERED_SAMPLES:
            self._flush()

    def reset(self) -> None:
        super().reset()
        self._predictions, self._targets, self._num_buffered = [], [], 0

    def _prepare_compute(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if not self._predictions:
            return
        predictions, targets = torch.cat(self._predictions), torch.cat(self._targets)
        self._predictions, self._targets, self._num_buffered = [], [], 0
        self._check_targets(targets)
        self._move_to(targets.device)
        for metric in self._metrics.values():
            metric.update(predictions, targets)

    def _check_targets(self, targets: Tensor) -> None:
        if targets.numel() == 0:
            return
        low, high = torch.stack([targets.min(), targets.max()]).tolist()  # one host sync
        if low < 0 or high >= self.num_classes:
            raise DataError(
                f"classification targets range over [{low}, {high}], but the model has "
                f"{self.num_classes} classes (expected ids 0..{self.num_classes - 1}); "
                "check the label column or the model's number of outputs"
            )

    def _summarize(self, values: dict[str, Tensor]) -> dict:
        confusion = values["confusion_matrix"]  # (C, C): rows = true class, cols = predicted
        result = {"accuracy": float(values["accuracy"])}
        for average in ("macro", "weighted"):
            for name in _SCORES:
                result[f"{name}_{average}"] = float(values[f"{name}_{average}"])
        per_class = {name: values[f"{name}_none"].tolist() for name in _SCORES}
        per_class["support"] = confusion.sum(dim=1).tolist()
        result["per_class"] = per_class
        result["confusion_matrix"] = confusion.tolist()
        result["num_samples"] = int(confusion.sum())
        return result


def _float64(metric: Metric) -> Metric:
    """Count in float64 so ratios come out as clean doubles (0.9, not 0.8999999762)."""
    return metric.set_dtype(torch.float64)
