"""MetricSet: torchmetrics objects whose states a Strategy's ``all_gather`` can merge.

This package never touches the process group: the Strategy hands ``compute`` a plain
``all_gather(tensor) -> list[tensor]`` and torchmetrics' own ``Metric.sync`` uses it to
sum every rank's states (counts, sums of errors) before computing. Because only sums are
exchanged, the synced result is one process's result over the union of the samples:
bit for bit for classification (integer counts), and up to float64 summation order for
regression's sums of errors.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

AllGather = Callable[[Tensor], list[Tensor]]

# Every metric is built with these: compute() never syncs on its own (even when a process
# group exists) and never returns a cached value, so ``all_gather`` alone decides syncing.
METRIC_OPTIONS: dict[str, Any] = {"sync_on_compute": False, "compute_with_cache": False}


class MetricSet:
    """A named group of torchmetrics objects for one task (see ``build_metrics``)."""

    def __init__(self, metrics: dict[str, Metric]):
        self._metrics = metrics

    def update(self, output: Tensor, target: Tensor) -> None:
        raise NotImplementedError

    def compute(self, *, all_gather: AllGather | None = None) -> dict:
        """Plain-Python results; with ``all_gather``, over the samples of every rank.

        Args:
            all_gather: the Strategy's gather (one tensor from every rank, in rank order);
                every rank must call ``compute`` with it, as it is a collective.
        """
        self._prepare_compute()
        with warnings.catch_warnings():
            # A rank that saw no samples still computes the synced (global) states.
            warnings.filterwarnings("ignore", message=".*was called before the ``update``")
            values = {name: _compute(metric, all_gather) for name, metric in self._metrics.items()}
        return self._summarize(values)

    def to(self, device: torch.device | str) -> MetricSet:
        """Hold states on the Strategy's device, so a rank with no batches gathers there too."""
        self._move_to(torch.device(device))
        return self

    def reset(self) -> None:
        for metric in self._metrics.values():
            metric.reset()

    def _prepare_compute(self) -> None:
        """Hook run before syncing (classification feeds its buffered predictions here)."""

    def _summarize(self, values: dict[str, Tensor]) -> dict:
        raise NotImplementedError

    def _move_to(self, device: torch.device) -> None:
        for metric in self._metrics.values():
            if metric.device != device:
                metric.to(device)


def _compute(metric: Metric, all_gather: AllGather | None) -> Tensor:
    if all_gather is None:
        return metric.compute()
    # Sums every rank's states; compute() restores this rank's own states when it is done.
    with metric.sync_context(dist_sync_fn=_adapt(all_gather), distributed_available=lambda: True):
        return metric.compute()


def _adapt(all_gather: AllGather) -> Callable[..., list[Tensor]]:
    """torchmetrics calls ``dist_sync_fn(tensor, group=...)``; the Strategy owns the group."""

    def gather(tensor: Tensor, group: Any = None) -> list[Tensor]:
        return all_gather(tensor)

    return gather
