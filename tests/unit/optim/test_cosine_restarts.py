"""`cosine_restarts` (a snapshot ensemble's schedule) against its closed form."""

import math

import pytest

from scaletrain.config import ScheduleConfig
from scaletrain.optim.schedules import lr_multiplier


@pytest.mark.parametrize(("cycles", "total"), [(1, 90), (3, 90), (4, 30)])
def test_each_cycle_is_a_half_cosine_restarting_at_one(cycles, total):
    cfg = ScheduleConfig(name="cosine_restarts", cycles=cycles, min_lr_ratio=0.1)
    length = total / cycles
    for step in range(total):
        progress = (step % length) / length
        expected = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
        assert lr_multiplier(cfg, step, total_steps=total) == pytest.approx(expected, abs=1e-12)
    starts = [int(c * length) for c in range(cycles) if (c * length).is_integer()]
    assert all(lr_multiplier(cfg, s, total_steps=total) == pytest.approx(1.0) for s in starts)
    assert len(starts) == cycles or total % cycles


def test_one_cycle_equals_cosine():
    restarts = ScheduleConfig(name="cosine_restarts", cycles=1, min_lr_ratio=0.2)
    cosine = ScheduleConfig(name="cosine", min_lr_ratio=0.2)
    for step in range(50):
        assert lr_multiplier(restarts, step, total_steps=50) == pytest.approx(
            lr_multiplier(cosine, step, total_steps=50), abs=1e-12
        )


def test_a_cosine_restarts_run_cannot_be_made_longer():
    from scaletrain.train.extend import schedule_needs_total

    cfg = ScheduleConfig(name="cosine_restarts", cycles=3)
    assert schedule_needs_total(cfg) == "optim.schedule.name"  # the cycles would move
