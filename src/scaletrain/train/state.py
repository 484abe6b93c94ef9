"""TrainState: everything exact resume needs, split into DCP tensors and JSON side state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from scaletrain.checkpoint.state_dict import (
    load_model_and_optimizer_state,
    model_and_optimizer_state,
)
from scaletrain.train.rng import capture_rng, restore_rng


class Stateful(Protocol):
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class TrainState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Any  # optim.schedules.Schedule: the lr multiplier and the rollbacks' back-off
    loader: Any
    scaler: torch.amp.GradScaler | None = None
    # components with their own resumable state (the guard's window, the epoch's sums),
    # saved under their names in the side state
    components: dict[str, Stateful] = field(default_factory=dict)
    step: int = 0
    epoch: int = 0  # epochs completed
    best_value: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    pending_loss: float = 0.0  # loss summed since the last log line (not yet logged)
    pending_steps: int = 0  # steps in that sum (skipped steps are not)
    counters: dict = field(
        default_factory=lambda: {
            "skipped_steps": 0,
            "skipped_batches": 0,
            "rollbacks": 0,
            "restarts": 0,
        }
    )
    skip_spans: list = field(default_factory=list)  # [epoch, start, stop] never to train on
    # the strategy's `replicas` where ranks hold weights of their own between syncs (local
    # SGD, DiLoCo): it says what a checkpoint holds besides this rank's model and optimizer
    replicas: Any = None

    def tensors(self) -> dict:
        """Model and optimizer state keyed by parameter names (reshardable by DCP)."""
        tensors = model_and_optimizer_state(self.model, self.optimizer)
        return tensors if self.replicas is None else self.replicas.checkpoint_tensors(tensors)

    def load_tensors(self, tensors: dict) -> None:
        if self.replicas is not None:
            tensors = self.replicas.restore_tensors(tensors)
        load_model_and_optimizer_state(self.model, self.optimizer, tensors)

    def side_state(self) -> dict:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "best_value": self.best_value,
            "best_step": self.best_step,
            "evals_without_improvement": self.evals_without_improvement,
            "pending_loss": self.pending_loss,
            "pending_steps": self.pending_steps,
            "counters": dict(self.counters),
            "lr_scale": self.schedule.backoff,
            "skip_spans": [list(span) for span in self.skip_spans],
            **{name: part.state_dict() for name, part in self.components.items()},
            **({"replicas": self.replicas.state_dict()} if self.replicas is not None else {}),
            "schedule": {"last_epoch": self.schedule.last_epoch},
            "scaler": _scaler_state(self.scaler),
            "loader": self.loader.state_dict(),
            "rng": capture_rng(),
        }

    def load_side_state(self, side: dict) -> None:
        keys = ("step", "epoch", "best_value", "best_step", "evals_without_improvement")
        for key in (*keys, "pending_loss"):
            setattr(self, key, side[key])
        self.pending_steps = side.get("pending_steps", 0)
        self.counters = {**self.counters, **side["counters"]}
        self.skip_spans = [list(span) for span in side.get("skip_spans", [])]
        for name, part in self.components.items():
            part.load_state_dict(dict(side.get(name, {})))
        if self.replicas is not None:  # None: a checkpoint of another strategy
            self.replicas.load_state_dict(side.get("replicas"))
        self.schedule.last_epoch = side["schedule"]["last_epoch"]
        self.schedule.set_backoff(side.get("lr_scale", 1.0))
        if self.scaler is not None and side["scaler"]:
            self.scaler.load_state_dict(side["scaler"])
        self.loader.load_state_dict(side["loader"])
        restore_rng(side["rng"])


def _scaler_state(scaler: torch.amp.GradScaler | None) -> dict | None:
    if scaler is None:
        return None
    return {
        k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in scaler.state_dict().items()
    }
