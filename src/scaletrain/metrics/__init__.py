"""Evaluation metrics, the run's metric writer, process memory readings and MFU (``mfu``).

Metric math is torchmetrics; states are reduced across ranks through the ``all_gather``
callable that the Strategy passes to ``MetricSet.compute``, so this package never touches
the process group itself.
"""

from __future__ import annotations

from scaletrain.metrics.classification import CLASSIFICATION_METRICS, ClassificationMetrics
from scaletrain.metrics.language import LANGUAGE_METRICS, LanguageModelMetrics
from scaletrain.metrics.logger import MetricsLogger, read_metrics, scalar_items
from scaletrain.metrics.metric_set import AllGather, MetricSet
from scaletrain.metrics.regression import REGRESSION_METRICS, RegressionMetrics
from scaletrain.metrics.system import current_rss_mb, format_table, peak_rss_mb

# Task -> the keys its ``MetricSet.compute`` returns (for ``scaletrain list metrics``).
METRICS: dict[str, tuple[str, ...]] = {
    "classification": CLASSIFICATION_METRICS,
    "regression": REGRESSION_METRICS,
    "language_model": LANGUAGE_METRICS,
}


def build_metrics(task: str, *, num_classes: int | None) -> MetricSet:
    """The MetricSet for a resolved data task (``classification`` needs ``num_classes``)."""
    if task == "classification":
        if num_classes is None or num_classes < 2:
            raise ValueError(f"classification metrics need num_classes >= 2, got {num_classes}")
        return ClassificationMetrics(num_classes)
    if task == "regression":
        return RegressionMetrics()
    if task == "language_model":
        return LanguageModelMetrics()
    raise ValueError(f"unknown metrics task {task!r}; expected one of {', '.join(METRICS)}")


__all__ = [
    "METRICS",
    "AllGather",
    "ClassificationMetrics",
    "LanguageModelMetrics",
    "MetricSet",
    "MetricsLogger",
    "RegressionMetrics",
    "build_metrics",
    "current_rss_mb",
    "format_table",
    "peak_rss_mb",
    "read_metrics",
    "scalar_items",
]
