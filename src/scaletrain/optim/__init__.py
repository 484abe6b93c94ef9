"""Optimizers, LR schedules, penalties, gradient clipping and losses, each from its config section."""

from scaletrain.optim.clipping import clip_gradients, gradient_sum
from scaletrain.optim.losses import LOSS_TASKS, LOSSES, build_loss, class_weights, register_loss
from scaletrain.optim.optimizers import (
    FUSED_DEVICES,
    OPTIMIZERS,
    build_optimizer,
    build_param_groups,
    check_implementation,
    choose_kernel,
    register_optimizer,
)
from scaletrain.optim.penalties import Penalty, build_penalty
from scaletrain.optim.schedules import (
    SCHEDULES,
    build_schedule,
    lr_multiplier,
    num_warmup_steps,
    register_schedule,
)

__all__ = [
    "FUSED_DEVICES",
    "LOSSES",
    "LOSS_TASKS",
    "OPTIMIZERS",
    "SCHEDULES",
    "Penalty",
    "build_loss",
    "build_optimizer",
    "build_param_groups",
    "build_penalty",
    "build_schedule",
    "check_implementation",
    "choose_kernel",
    "class_weights",
    "clip_gradients",
    "gradient_sum",
    "lr_multiplier",
    "num_warmup_steps",
    "register_loss",
    "register_optimizer",
    "register_schedule",
]
