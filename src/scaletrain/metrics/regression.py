"""Regression metrics (torchmetrics), defined to match scikit-learn's defaults.

``mse``, ``mae`` and ``r2`` are scikit-learn's ``multioutput="uniform_average"`` over all
outputs; ``rmse`` is the square root of that ``mse`` (for several outputs this differs from
scikit-learn's ``root_mean_squared_error``, which averages per-output roots). States are
float64 sums: R2 is computed from sums of squares, which cancel badly in float32.
Under a Strategy every rank must have seen at least one batch (samplers pad to ensure it).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.aggregation import SumMetric
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, R2Score

from scaletrain.errors import DataError
from scaletrain.metrics.metric_set import METRIC_OPTIONS, MetricSet

REGRESSION_METRICS = ("mse", "mae", "rmse", "r2", "num_samples")


class RegressionMetrics(MetricSet):
    """Mean squared and absolute error, RMSE and R2 over one or several outputs."""

    def __init__(self) -> None:
        metrics = {
            "mse": MeanSquaredError(**METRIC_OPTIONS),
            "mae": MeanAbsoluteError(**METRIC_OPTIONS),
            "rmse": MeanSquaredError(squared=False, **METRIC_OPTIONS),
            "r2": R2Score(**METRIC_OPTIONS),
            # "disable": no NaN check, which would wait for the GPU on every batch.
            "num_samples": SumMetric(nan_strategy="disable", **METRIC_OPTIONS),
        }
        super().__init__(
            {name: metric.set_dtype(torch.float64) for name, metric in metrics.items()}
        )

    def update(self, output: Tensor, target: Tensor) -> None:
        """Add one batch: outputs (B,), (B, 1) or (B, k) against targets (B,) or (B, k)."""
        target = target.detach().to(torch.float64)
        output = output.detach().to(torch.float64)
        if output.shape != target.shape:
            if output.numel() != target.numel():
                raise DataError(
                    f"regression outputs of shape {tuple(output.shape)} do not match targets of "
                    f"shape {tuple(target.shape)}; the model needs one output per target column"
                )
            output = output.reshape(target.shape)  # (B, 1) outputs against (B,) targets
        self._move_to(target.device)
        for name, metric in self._metrics.items():
            if name == "num_samples":
                metric.update(target.new_full((), target.shape[0]))  # on device: no copy
            else:
                metric.update(output, target)

    def _summarize(self, values: dict[str, Tensor]) -> dict:
        result = {name: float(values[name]) for name in ("mse", "mae", "rmse", "r2")}
        result["num_samples"] = int(values["num_samples"])
        return result
