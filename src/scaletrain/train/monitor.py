"""Best-step tracking and early stopping on one monitored validation metric."""

from __future__ import annotations

from scaletrain.config import EarlyStoppingConfig, MonitorConfig
from scaletrain.errors import ConfigError
from scaletrain.metrics import METRICS

_NOT_MONITORABLE = ("per_class", "confusion_matrix", "num_samples")


def check_monitor(cfg: MonitorConfig, *, task: str) -> None:
    """Fail before training starts if the monitored metric can never exist."""
    split, _, metric = cfg.metric.partition(".")
    scalars = ["loss", *(m for m in METRICS[task] if m not in _NOT_MONITORABLE)]
    if split != "val" or metric not in scalars:
        raise ConfigError(
            f"train.monitor.metric: {cfg.metric!r} is not a validation metric for {task}; "
            f"expected one of {', '.join('val.' + name for name in scalars)}"
        )


class Monitor:
    def __init__(self, cfg: MonitorConfig, stopping: EarlyStoppingConfig, state):
        split, _, self.metric = cfg.metric.partition(".")
        if split != "val" or not self.metric:
            raise ConfigError(
                f"train.monitor.metric: expected `val.<metric>` (e.g. val.loss), got {cfg.metric!r}"
            )
        self.name = cfg.metric
        self.mode = cfg.mode
        self.stopping = stopping
        self.state = state  # best_value / best_step / evals_without_improvement live in TrainState

    def value_of(self, result) -> float:
        if self.metric == "loss":
            return result.loss
        if self.metric not in result.metrics or isinstance(
            result.metrics[self.metric], list | dict
        ):
            scalars = ["loss"] + [
                k for k, v in result.metrics.items() if isinstance(v, int | float)
            ]
            raise ConfigError(
                f"train.monitor.metric: no validation metric {self.metric!r}; "
                f"available: {', '.join('val.' + name for name in scalars)}"
            )
        return float(result.metrics[self.metric])

    def observe(self, result) -> bool:
        """Record one evaluation; True when it is the best so far (by more than min_delta)."""
        value = self.value_of(result)
        best = self.state.best_value
        delta = self.stopping.min_delta
        better = best is None or (
            value < best - delta if self.mode == "min" else value > best + delta
        )
        if better:
            self.state.best_value, self.state.best_step = value, self.state.step
            self.state.evals_without_improvement = 0
        else:
            self.state.evals_without_improvement += 1
        return better

    def should_stop(self) -> bool:
        patience = self.stopping.patience
        return patience > 0 and self.state.evals_without_improvement >= patience

    def describe(self) -> str:
        return (
            f"{self.name} did not improve for {self.state.evals_without_improvement} evaluations "
            f"(best {self.state.best_value:.6g} at step {self.state.best_step})"
        )
