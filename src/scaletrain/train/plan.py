"""Derived numbers, computed once: batch arithmetic and step counts."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from scaletrain.config import TrainConfig
from scaletrain.errors import ConfigError


@dataclass(frozen=True)
class Plan:
    world_size: int
    global_batch_size: int
    micro_batch_size: int
    grad_accum_steps: int
    steps_per_epoch: int
    total_steps: int
    num_train_samples: int

    def to_dict(self) -> dict:
        return asdict(self)


def make_plan(
    cfg: TrainConfig, *, world_size: int, num_train_samples: int, drop_last: bool
) -> Plan:
    """global batch = micro batch x accumulation x world size (the last micro batch may be short)."""
    if cfg.batch_size % world_size:
        raise ConfigError(
            f"train.batch_size: {cfg.batch_size} is not divisible by the world size {world_size}"
        )
    per_rank = cfg.batch_size // world_size
    requested = None if cfg.micro_batch_size == "auto" else cfg.micro_batch_size
    micro = min(requested or per_rank, per_rank)  # auto: the largest, halved on OOM
    if num_train_samples < cfg.batch_size and drop_last:
        raise ConfigError(
            f"train.batch_size: {cfg.batch_size} exceeds the {num_train_samples} training "
            "samples and data.drop_last is true, so an epoch would have no step"
        )
    divide = math.floor if drop_last else math.ceil
    steps_per_epoch = max(1, divide(num_train_samples / cfg.batch_size))
    total = cfg.max_steps or steps_per_epoch * cfg.max_epochs
    return Plan(
        world_size=world_size,
        global_batch_size=cfg.batch_size,
        micro_batch_size=micro,
        grad_accum_steps=math.ceil(per_rank / micro),
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        num_train_samples=num_train_samples,
    )
