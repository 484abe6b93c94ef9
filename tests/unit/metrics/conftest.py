"""An in-process stand-in for the Strategy's all_gather: one thread per "rank"."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from scaletrain.metrics import MetricSet


def _compute_across_ranks(metric_sets: list[MetricSet]) -> list[dict]:
    """Run every rank's compute() in its own thread, exchanging tensors like a collective."""
    world_size = len(metric_sets)
    barrier = threading.Barrier(world_size, timeout=30)
    slots: list[torch.Tensor | None] = [None] * world_size
    num_calls = [0] * world_size

    def make_all_gather(rank: int) -> Callable[[torch.Tensor], list[torch.Tensor]]:
        def all_gather(tensor: torch.Tensor) -> list[torch.Tensor]:
            barrier.wait()  # every rank has copied the previous round out of the slots
            slots[rank] = tensor.clone()
            barrier.wait()  # every rank has put its tensor in
            num_calls[rank] += 1
            return [slot.clone() for slot in slots]

        return all_gather

    with ThreadPoolExecutor(world_size) as pool:
        futures = [
            pool.submit(metric_set.compute, all_gather=make_all_gather(rank))
            for rank, metric_set in enumerate(metric_sets)
        ]
        results = [future.result() for future in futures]
    assert len(set(num_calls)) == 1 and num_calls[0] > 0, num_calls
    return results


@pytest.fixture
def compute_across_ranks() -> Callable[[list[MetricSet]], list[dict]]:
    return _compute_across_ranks
