"""TrainState: everything exact resume needs, split into DCP tensors and JSON side state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from scaletrain.train.rng import capture_rng, restore_rng


@dataclass
class TrainState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    loader: Any
    scaler: torch.amp.GradScaler | None = None
    step: int = 0
    epoch: int = 0
    best_value: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    pending_loss: float = 0.0  # loss summed since the last log line (not yet logged)
    counters: dict = field(
        default_factory=lambda: {"skipped_steps": 0, "rollbacks": 0, "restarts": 0}
    )

    def tensors(self) -> dict:
        """Model and optimizer state keyed by parameter names (reshardable by DCP)."""
        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        return {"model": model_state, "optim": optim_state}

    def load_tensors(self, tensors: dict) -> None:
        set_state_dict(
            self.model,
            self.optimizer,
            model_state_dict=tensors["model"],
            optim_state_dict=tensors["optim"],
        )

    def side_state(self) -> dict:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "best_value": self.best_value,
            "best_step": self.best_step,
            "evals_without_improvement": self.evals_without_improvement,
            "pending_loss": self.pending_loss,
            "counters": dict(self.counters),
            "schedule": {"last_epoch": self.schedule.last_epoch},
            "scaler": _scaler_state(self.scaler),
            "loader": self.loader.state_dict(),
            "rng": capture_rng(),
        }

    def load_side_state(self, side: dict) -> None:
        keys = ("step", "epoch", "best_value", "best_step", "evals_without_improvement")
        for key in (*keys, "pending_loss"):
            setattr(self, key, side[key])
        self.counters = dict(side["counters"])
        self.schedule.last_epoch = side["schedule"]["last_epoch"]
        self.schedule._last_lr = [
            group["lr"] for group in self.optimizer.param_groups
        ]  # the optimizer's lr came back with its state
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
