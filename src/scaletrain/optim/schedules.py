"""LR schedules as a multiplier on ``optim.lr`` (``LambdaLR``), so the lr is defined once.

``step`` counts optimizer updates already done: the update number ``step`` (0-based) uses
``optim.lr * lr_multiplier(cfg, step)``, and after the last update the logged lr is the
multiplier at ``total_steps``.

Warmup (``W`` = ``warmup_steps``, or ``warmup_ratio * total_steps`` rounded half up) rises
linearly: the multiplier is ``(step + 1) / (W + 1)`` for ``step < W`` (``1/(W+1)``, ...,
``W/(W+1)``), so no update has lr 0 (as torchtitan). Then the named shape runs over the
remaining ``D = total_steps - W`` steps on ``s = step - W``, ``progress = min(s / D, 1)``:

- constant: 1
- step: ``gamma ** (s // step_size)``
- multistep: ``gamma ** (number of milestones <= s)`` (milestones count from warmup's end)
- exponential: ``gamma ** s`` (per update: pick gamma close to 1, e.g. 0.999)
- cosine: ``min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + cos(pi * progress))``
- linear: ``1 - (1 - min_lr_ratio) * progress``
- onecycle: torch's ``OneCycleLR`` (cosine annealing, two phases, lr only, no momentum
  cycling): from ``1/div_factor`` up to 1 at step ``pct_start * D - 1``, then down to
  ``1/(div_factor * final_div_factor)`` at step ``D - 1``; it is its own warmup.

Cosine and linear reach ``min_lr_ratio`` at ``total_steps`` and stay there after.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR

from scaletrain.config import ScheduleConfig
from scaletrain.errors import ConfigError

# shape(cfg, step_after_warmup, num_decay_steps) -> multiplier
ScheduleShape = Callable[[ScheduleConfig, int, int], float]
SCHEDULES: dict[str, ScheduleShape] = {}


def register_schedule(name: str) -> Callable[[ScheduleShape], ScheduleShape]:
    """Add a shape under ``optim.schedule.name: name`` (its docstring is its description)."""

    def decorator(shape: ScheduleShape) -> ScheduleShape:
        assert name not in SCHEDULES, f"schedule {name!r} registered twice"
        SCHEDULES[name] = shape
        return shape

    return decorator


@register_schedule("constant")
def _constant(cfg: ScheduleConfig, step: int, num_steps: int) -> float:
    """Constant lr after warmup."""
    return 1.0


@register_schedule("step")
def _step(cfg: ScheduleConfig, step: int, num_steps: int) -> float:
    """Multiply by gamma every step_size steps."""
    return cfg.gamma ** (step // cfg.step_size)


@register_schedule("multistep")
def _multistep(cfg: ScheduleConfig, step: int, num_steps: int) -> float:
    """Multiply by gamma at each milestone."""
    return cfg.gamma ** sum(milestone <= step for milestone in cfg.milestones)


@register_schedule("exponential")
def _exponential(cfg: ScheduleConfig, step: int, num_steps: int) -> float:
    """Multiply by gamma every step."""
    return cfg.gamma**step


@register_schedule("cosine")
def _cosine(cfg: ScheduleConfig, step: int, num_steps: int) -> float:
    """Half a cosine from 1 down to min_lr_ratio."""
    progress = min(step / num_steps, 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@register_schedule("cosine_restarts")
def _cosine_restarts(cfg: ScheduleConfig, step: int, num_steps: int) -> float:
    """`cycles` equal half cosines from 1 down to min_lr_ratio, each restarting at 1
    (SGDR; a snapshot ensemble keeps the weights at each cycle's end)."""
    length = num_steps / cfg.cycles
    progress = min((step % length) / length, 1.0) if step < num_steps else 1.0
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@register_schedule("linear")
def _linear(cfg: ScheduleConfig, step: int, num_steps: int) -> float:
    """Straight line from 1 down to min_lr_ratio."""
    progress = min(step / num_steps, 1.0)
    return 1 - (1 - cfg.min_lr_ratio) * progress


@register_schedule("onecycle")
def _onecycle(cfg: ScheduleConfig, step: int, num_steps: int) -> float:
    """Cosine rise from 1/div_factor to 1, then cosine fall to 1/(div_factor*final_div_factor)."""
    start = 1 / cfg.div_factor
    end = start / cfg.final_div_factor
    # Phase ends as in torch's OneCycleLR (float steps, 0-based: the last update is D - 1).
    peak_step = cfg.pct_start * num_steps - 1
    last_step = num_steps - 1
    if peak_step > 0 and step <= peak_step:
        return _cosine_between(start, 1.0, step / peak_step)
    progress = min((step - peak_step) / (last_step - peak_step), 1.0)
    return _cosine_between(1.0, end, progress)


def _cosine_between(start: float, end: float, progress: float) -> float:
    return end + (start - end) / 2 * (math.cos(math.pi * progress) + 1)


def num_warmup_steps(cfg: ScheduleConfig, *, total_steps: int) -> int:
    """Warmup length: ``warmup_steps``, or ``warmup_ratio * total_steps`` rounded half up."""
    if cfg.warmup_steps:
        return cfg.warmup_steps
    return math.floor(cfg.warmup_ratio * total_steps + 0.5)


def lr_multiplier(cfg: ScheduleConfig, step: int, *, total_steps: int) -> float:
    """The factor on ``optim.lr`` for update number ``step`` (0-based); see the module doc."""
    warmup = num_warmup_steps(cfg, total_steps=total_steps)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return SCHEDULES[cfg.name](cfg, step - warmup, max(total_steps - warmup, 1))


class Schedule(LambdaLR):
    """``LambdaLR`` whose factor is ``lr_multiplier(step) x backoff``: the lr is defined in one
    place, and the guard's rollbacks lower it through ``set_backoff``, not by editing lrs."""

    def __init__(self, optimizer: torch.optim.Optimizer, multiplier: Callable[[int], float]):
        self.backoff = 1.0
        self._multiplier = multiplier
        super().__init__(optimizer, self._factor)

    def _factor(self, step: int) -> float:
        return self._multiplier(step) * self.backoff  # x 1.0 keeps the multiplier's bits

    def state_dict(self) -> dict:
        """LambdaLR's state without the multiplier (a function of the config, not state)."""
        state = super().state_dict()
        state.pop("_multiplier", None)
        return state

    def set_backoff(self, backoff: float) -> None:
        """Scale the lr by ``backoff`` from the current step on (a rollback's lr back-off)."""
        self.backoff = backoff
        self.last_epoch -= 1  # re-apply the current step's lr through LambdaLR's own step
        self.step()


def build_schedule(
    cfg: ScheduleConfig, optimizer: torch.optim.Optimizer, *, total_steps: int
) -> Schedule:
    """A ``Schedule`` applying ``lr_multiplier`` to every param group's lr.

    Args:
        cfg: the ``optim.schedule`` config section.
        optimizer: the optimizer whose param-group lrs are scaled.
        total_steps: optimizer updates in the whole run.
    """
    assert total_steps > 0, f"total_steps must be > 0, got {total_steps}"
    if cfg.name == "onecycle" and num_warmup_steps(cfg, total_steps=total_steps):
        raise ConfigError(
            "optim.schedule.warmup_steps: onecycle has its own rise (optim.schedule.pct_start); "
            "set warmup_steps and warmup_ratio to 0"
        )
    return Schedule(optimizer, functools.partial(lr_multiplier, cfg, total_steps=total_steps))
