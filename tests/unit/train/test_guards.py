"""StepGuard decisions against a plain numpy z-score, and the ledger's ranges."""

import json
import math

import numpy as np
import pytest
import torch

from scaletrain.config import GuardConfig
from scaletrain.parallel import SingleStrategy
from scaletrain.train.guards import StepGuard
from scaletrain.train.ledger import Ledger, expand_ledger, read_ledger

STRATEGY = SingleStrategy(torch.device("cpu"))


def _guard(**cfg):
    return StepGuard(GuardConfig.model_validate(cfg), strategy=STRATEGY, log_every_steps=10)


def _check(guard, step, loss, grad_norm=1.0, *, stop=False, save=False):
    return guard.check(
        step,
        loss=torch.tensor(loss),
        grad_norm=torch.tensor(grad_norm),
        stop_requested=stop,
        save_due=save,
        span=[0, step * 4, step * 4 + 4],
    )


def test_spike_is_a_z_score_over_the_window_of_good_steps():
    guard = _guard(spike={"threshold": 4.0, "window": 8})
    rng = np.random.default_rng(0)
    losses = list(2.0 + 0.1 * rng.standard_normal(20))
    for step, loss in enumerate(losses, start=1):
        assert _check(guard, step, float(loss)).action == "step"
    window = np.array(losses[-8:], dtype=np.float64)
    mean, std = window.mean(), window.std()  # population std, as the guard
    below, above = mean + 3.9 * std, mean + 4.1 * std
    assert _check(guard, 21, float(below)).action == "step"
    window = np.array([*losses[-7:], np.float32(below)], dtype=np.float64)
    above = window.mean() + 4.1 * window.std()
    verdict = _check(guard, 22, float(above))
    assert (verdict.action, verdict.reason) == ("skip", "spike")
    assert verdict.loss == pytest.approx(above, rel=1e-6)


def test_no_spike_before_the_window_fills():
    guard = _guard(spike={"threshold": 2.0, "window": 8})
    for step in range(1, 8):
        assert _check(guard, step, 1.0 + 0.01 * step).action == "step"
    assert _check(guard, 8, 100.0).action == "step"  # 7 steps seen: no verdict on spikes yet


@pytest.mark.parametrize(
    ("policy", "actions"),
    [
        ("skip", ["skip", "skip", "stop"]),
        ("rollback", ["skip", "skip", "rollback"]),
        ("stop", ["stop", "stop", "stop"]),
    ],
)
def test_policies_on_consecutive_nonfinite_steps(policy, actions):
    guard = _guard(nonfinite=policy, max_consecutive_bad=3)
    assert _check(guard, 1, 1.0).action == "step"
    seen = [_check(guard, step, math.nan).action for step in (2, 3, 4)]
    assert seen == actions
    assert guard.bad_spans == [[0, 8, 12], [0, 12, 16], [0, 16, 20]]
    assert _check(guard, 5, 1.0).action == "step" and guard.consecutive_bad == 0


def test_infinite_gradient_norm_alone_is_bad():
    guard = _guard()
    verdict = _check(guard, 1, 0.5, grad_norm=math.inf)
    assert (verdict.action, verdict.reason) == ("skip", "nonfinite")


def test_host_flags_travel_with_the_check():
    guard = _guard()
    verdict = _check(guard, 1, 0.5, stop=True, save=True)
    assert verdict.interrupt and verdict.save_due and verdict.action == "step"
    off = _guard(nonfinite="off")
    verdict = _check(off, 3, math.nan, stop=True)
    assert verdict.interrupt and not verdict.bad  # off: no check, the signal still counts


def test_guard_state_round_trips_through_json():
    guard = _guard(spike={"threshold": 3.0, "window": 8})
    for step in range(1, 12):
        _check(guard, step, 1.0 + step / 100)
    restored = _guard(spike={"threshold": 3.0, "window": 8})
    restored.load_state_dict(json.loads(json.dumps(guard.state_dict())))
    assert list(restored.window) == list(guard.window)


def test_ledger_merges_steps_into_ranges_and_truncates(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl", enabled=True)
    for step in range(1, 6):
        ledger.record(step, [0, (step - 1) * 32, step * 32])
    ledger.record(6, [0, 160, 170])  # the epoch's short last step
    ledger.record(7, [1, 0, 32], skipped="nonfinite")
    ledger.flush()
    ledger.passed_over(8, [1, 32, 64])
    ledger.record(8, [1, 64, 96])
    ledger.flush()
    lines = read_ledger(tmp_path / "ledger.jsonl")
    assert lines[0] == {"steps": [1, 6], "epoch": 0, "positions": [0, 170], "batch": 32}
    rows = expand_ledger(lines)
    assert rows[4:] == [
        (5, 0, 128, 160, None),
        (6, 0, 160, 170, None),
        (7, 1, 0, 32, "nonfinite"),
        (8, 1, 32, 64, "offending"),
        (8, 1, 64, 96, None),
    ]
    ledger.truncate(after_step=3)
    assert expand_ledger(read_ledger(tmp_path / "ledger.jsonl")) == [
        (1, 0, 0, 32, None),
        (2, 0, 32, 64, None),
        (3, 0, 64, 96, None),
    ]
