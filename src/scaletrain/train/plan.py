"""Derived numbers, computed once: batch arithmetic and step counts."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass

from torch import nn

from scaletrain.config import TrainConfig
from scaletrain.data import smallest_micro_batch
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
    drop_last: bool
    smallest_micro_batch: int  # the fewest samples any rank's micro batch holds in an epoch

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
        drop_last=drop_last,
        smallest_micro_batch=smallest_micro_batch(
            num_train_samples,
            global_batch_size=cfg.batch_size,
            micro_batch_size=micro,
            world_size=world_size,
            drop_last=drop_last,
        ),
    )


def with_micro_batch(plan: Plan, micro_batch_size: int) -> Plan:
    """The same global batch in micro batches of `micro_batch_size` (more accumulation)."""
    per_rank = plan.global_batch_size // plan.world_size
    return dataclasses.replace(
        plan,
        micro_batch_size=micro_batch_size,
        grad_accum_steps=math.ceil(per_rank / micro_batch_size),
        smallest_micro_batch=smallest_micro_batch(
            plan.num_train_samples,
            global_batch_size=plan.global_batch_size,
            micro_batch_size=micro_batch_size,
            world_size=plan.world_size,
            drop_last=plan.drop_last,
        ),
    )


def check_batch_norm(plan: Plan, model: nn.Module) -> None:
    """Refuse a plan whose micro batches can hold one sample when the model has a
    BatchNorm1d: in training it needs 2+ values per channel and would fail mid-run."""
    if plan.smallest_micro_batch != 1:
        return
    norms = [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm1d)]
    if not norms:
        return
    if plan.global_batch_size // plan.world_size == 1 or plan.micro_batch_size == 1:
        cause = (
            f"train.batch_size {plan.global_batch_size} over {plan.world_size} process(es), "
            f"micro batches of {plan.micro_batch_size}"
        )
        fix = "raise train.batch_size (and train.micro_batch_size)"
    else:
        cause = f"the last step of an epoch leaves one sample of {plan.num_train_samples}"
        fix = "set data.drop_last=true or change train.batch_size"
    raise ConfigError(
        f"train.batch_size: {cause}, so a micro batch of 1 sample reaches the batch norm "
        f"`{norms[0]}` (model.batch_norm: true), which needs 2+ samples in training; "
        f"{fix}, or set model.batch_norm=false"
    )
