"""The best state so far as a CPU copy, written as a checkpoint once instead of at every new best.

On small data a checkpoint cost more than the epoch it followed (digits CNN: ~50 ms per save
against ~100 ms of training per epoch, bench/README.md), and a run improves most epochs. A
copy in memory costs a memcpy; the Trainer writes it (a real, verified checkpoint at the best
step) before the next step checkpoint it takes: every_minutes, the final one, or the one a
signal asks for. One process only: sharded states stay on their ranks and save as before.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Snapshot:
    step: int
    metric: str  # train.monitor's name
    value: float | None  # its value at `step`
    tensors: dict  # model and optimizer state, detached CPU copies
    side_state: dict  # the JSON side state as it was at `step`


class BestWeights:
    """Holds the newest best Snapshot until the Trainer writes it."""

    def __init__(self):
        self.snapshot: Snapshot | None = None

    def keep(self, state, *, metric: str, side_state: dict) -> None:
        """Copy `state` (a TrainState at a new best of `metric`) to CPU memory."""
        tensors, side = _cpu_copy(state.tensors()), copy.deepcopy(side_state)
        self.snapshot = Snapshot(state.step, metric, state.best_value, tensors, side)

    def take(self) -> Snapshot | None:
        """The snapshot not yet written (None if there is none), handed over once."""
        snapshot, self.snapshot = self.snapshot, None
        return snapshot


def _cpu_copy(tree):
    """Tensors copied to CPU (never aliases of the live ones); containers rebuilt; the rest
    deep-copied (optimizer param_groups hold lists)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", copy=True)
    if isinstance(tree, dict):
        return {key: _cpu_copy(value) for key, value in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_cpu_copy(value) for value in tree)
    return copy.deepcopy(tree)
