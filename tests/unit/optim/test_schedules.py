"""LR schedules: the lr a LambdaLR gives at each step vs closed forms written here, and torch."""

from __future__ import annotations

import io
import math

import pytest
import torch

from scaletrain.config import ScheduleConfig
from scaletrain.errors import ConfigError
from scaletrain.optim import SCHEDULES, build_schedule, lr_multiplier, num_warmup_steps

BASE_LR = 0.2


def lr_sequence(cfg: ScheduleConfig, *, total_steps: int, num_values: int) -> list[float]:
    """The lr each update 0..num_values-1 uses, read from a real optimizer as the loop does."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=BASE_LR)
    schedule = build_schedule(cfg, optimizer, total_steps=total_steps)
    values = []
    for _ in range(num_values):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return values


# Closed forms, written out independently for update `step` with warmup W over total T.
def expected(name: str, step: int, *, total: int, warmup: int, **options: float) -> float:
    if step < warmup:
        return (step + 1) / (warmup + 1)
    s, span = step - warmup, total - warmup
    progress = min(s / span, 1.0)
    floor = options.get("min_lr_ratio", 0.0)
    gamma = options.get("gamma", 0.1)
    return {
        "constant": lambda: 1.0,
        "step": lambda: gamma ** math.floor(s / options.get("step_size", 100)),
        "multistep": lambda: gamma ** len([m for m in options.get("milestones", []) if s >= m]),
        "exponential": lambda: math.exp(s * math.log(gamma)),
        "cosine": lambda: floor + (1 - floor) * (1 + math.cos(math.pi * progress)) / 2,
        "linear": lambda: 1 - (1 - floor) * progress,
    }[name]()


CASES = [
    ("constant", {}),
    ("step", {"step_size": 3, "gamma": 0.5}),
    ("multistep", {"milestones": [2, 5, 11], "gamma": 0.3}),
    ("exponential", {"gamma": 0.9}),
    ("cosine", {"min_lr_ratio": 0.1}),
    ("cosine", {}),
    ("linear", {"min_lr_ratio": 0.25}),
    ("linear", {}),
]


@pytest.mark.parametrize("warmup", [0, 4])
@pytest.mark.parametrize(("name", "options"), CASES)
def test_lr_sequence_equals_closed_form(name, options, warmup):
    total = 20
    cfg = ScheduleConfig(name=name, warmup_steps=warmup, **options)
    values = lr_sequence(cfg, total_steps=total, num_values=total + 3)  # 3 past the end
    for step, value in enumerate(values):
        want = BASE_LR * expected(name, step, total=total, warmup=warmup, **options)
        assert value == pytest.approx(want, rel=1e-12, abs=1e-15), step
        assert lr_multiplier(cfg, step, total_steps=total) * BASE_LR == pytest.approx(value)


def test_warmup_rises_linearly_and_never_uses_zero():
    cfg = ScheduleConfig(name="constant", warmup_steps=3)
    values = lr_sequence(cfg, total_steps=10, num_values=5)
    assert values == pytest.approx([BASE_LR * f for f in (0.25, 0.5, 0.75, 1.0, 1.0)])


@pytest.mark.parametrize(("ratio", "total", "warmup"), [(0.25, 10, 3), (0.2, 10, 2), (0.1, 7, 1)])
def test_warmup_ratio_rounds_half_up(ratio, total, warmup):
    cfg = ScheduleConfig(name="cosine", warmup_ratio=ratio, min_lr_ratio=0.05)
    assert num_warmup_steps(cfg, total_steps=total) == warmup
    values = lr_sequence(cfg, total_steps=total, num_values=total)
    for step, value in enumerate(values):
        want = expected("cosine", step, total=total, warmup=warmup, min_lr_ratio=0.05)
        assert value == pytest.approx(BASE_LR * want, rel=1e-12)


def test_cosine_reaches_min_lr_ratio_at_the_end_and_stays():
    cfg = ScheduleConfig(name="cosine", warmup_steps=5, min_lr_ratio=0.1)
    assert lr_multiplier(cfg, 5, total_steps=50) == pytest.approx(1.0)
    assert lr_multiplier(cfg, 50, total_steps=50) == pytest.approx(0.1, abs=1e-15)
    assert lr_multiplier(cfg, 80, total_steps=50) == pytest.approx(0.1, abs=1e-15)
    # The lr logged after the last update (the loop logs after schedule.step()) is the floor.
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=BASE_LR)
    schedule = build_schedule(cfg, optimizer, total_steps=50)
    for _ in range(50):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * BASE_LR, abs=1e-15)


@pytest.mark.parametrize(
    ("total", "pct_start", "div_factor", "final_div_factor"),
    [(100, 0.3, 25.0, 1e4), (37, 0.25, 10.0, 100.0), (8, 0.5, 5.0, 3.0)],
)
def test_onecycle_equals_torch_onecycle_lr(total, pct_start, div_factor, final_div_factor):
    cfg = ScheduleConfig(
        name="onecycle",
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
    )
    ours = lr_sequence(cfg, total_steps=total, num_values=total)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=BASE_LR)
    reference = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=BASE_LR,
        total_steps=total,
        pct_start=pct_start,
        anneal_strategy="cos",
        cycle_momentum=False,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
    )
    theirs = [optimizer.param_groups[0]["lr"]]
    for _ in range(total - 1):  # torch refuses to step past total_steps
        optimizer.step()
        reference.step()
        theirs.append(optimizer.param_groups[0]["lr"])
    assert max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) < 1e-9
    end = 1 / (div_factor * final_div_factor)
    assert lr_multiplier(cfg, total - 1, total_steps=total) == pytest.approx(end)
    assert lr_multiplier(cfg, total + 5, total_steps=total) == pytest.approx(end)


def test_onecycle_with_warmup_names_the_key():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=BASE_LR)
    with pytest.raises(ConfigError, match=r"^optim\.schedule\.warmup_steps"):
        build_schedule(ScheduleConfig(name="onecycle", warmup_steps=2), optimizer, total_steps=9)


def test_step_schedules_match_torch_without_warmup():
    references = {
        "step": (dict(step_size=4, gamma=0.5), torch.optim.lr_scheduler.StepLR),
        "multistep": (dict(milestones=[3, 7], gamma=0.2), torch.optim.lr_scheduler.MultiStepLR),
        "exponential": (dict(gamma=0.93), torch.optim.lr_scheduler.ExponentialLR),
    }
    for name, (options, scheduler_class) in references.items():
        ours = lr_sequence(ScheduleConfig(name=name, **options), total_steps=12, num_values=12)
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=BASE_LR)
        reference = scheduler_class(optimizer, **options)
        theirs = []
        for _ in range(12):
            theirs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            reference.step()
        assert ours == pytest.approx(theirs, rel=1e-12), name


def test_every_param_group_is_scaled_and_state_dict_loads_weights_only():
    params = [torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)]
    optimizer = torch.optim.SGD([{"params": [params[0]]}, {"params": [params[1]]}], lr=BASE_LR)
    schedule = build_schedule(ScheduleConfig(name="linear"), optimizer, total_steps=4)
    optimizer.step()
    schedule.step()
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.15, 0.15])
    buffer = io.BytesIO()
    torch.save(schedule.state_dict(), buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["last_epoch"] == 1  # no config pickled


def test_registry_holds_every_configurable_schedule():
    assert set(SCHEDULES) == set(ScheduleConfig.model_fields["name"].annotation.__args__)
