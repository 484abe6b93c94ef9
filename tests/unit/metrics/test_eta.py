"""The ETA estimator on synthetic timings: steady across pauses, converging to the truth."""

from __future__ import annotations

import random

import pytest

from scaletrain.metrics.eta import EtaEstimator, format_duration

TOTAL_STEPS, LOG_EVERY, STEPS_PER_EPOCH = 600, 10, 60
STEP_S, PAUSE_S, WARMUP_S = 0.05, 1.0, 2.0  # a pause (validation + checkpoint) per epoch


def _simulate(estimate) -> list[tuple[int, float, float, float]]:
    """(step, wall clock, estimated seconds left, true seconds left) at each log line."""
    rng = random.Random(0)
    step_times = [STEP_S * rng.uniform(0.8, 1.2) for _ in range(TOTAL_STEPS)]
    step_times[0] += WARMUP_S  # compilation, cold caches
    pauses = {step: PAUSE_S * rng.uniform(0.9, 1.1) for step in range(0, 601, STEPS_PER_EPOCH)}
    pauses.pop(0)
    lines, clock, window = [], 0.0, 0.0
    for step in range(1, TOTAL_STEPS + 1):
        clock += step_times[step - 1]
        window += step_times[step - 1]
        if step % LOG_EVERY == 0:
            truth = sum(step_times[step:]) + sum(p for s, p in pauses.items() if s >= step)
            lines.append((step, clock, estimate.line(step, window, clock), truth))
            window = 0.0
        if step in pauses:
            estimate.pause(step, pauses[step])
            clock += pauses[step]
    return lines


class _Steady:
    def __init__(self):
        self.eta = EtaEstimator(TOTAL_STEPS)

    def line(self, step, window_seconds, clock):
        self.eta.observe_window(LOG_EVERY, window_seconds)
        return self.eta.remaining(step)

    def pause(self, step, seconds):
        self.eta.observe_pause(step, seconds)


class _Naive:
    """The wall-clock rate of the last few log lines, pauses included (how rich's own
    TimeRemainingColumn estimates): the estimate that jumped from 1:33 to 2:06."""

    def __init__(self):
        self.seen = [(0, 0.0)]

    def line(self, step, window_seconds, clock):
        self.seen.append((step, clock))
        first_step, first_clock = self.seen[-4] if len(self.seen) > 3 else self.seen[0]
        return (TOTAL_STEPS - step) * (clock - first_clock) / (step - first_step)

    def pause(self, step, seconds):
        pass


def _worst_jump(lines, *, after_step: int) -> float:
    """Largest change between consecutive lines not explained by the time that passed,
    as a fraction of the earlier estimate (while more than an eighth of the run is left)."""
    worst = 0.0
    for (_, clock_a, eta_a, truth), (step, clock_b, eta_b, _) in zip(
        lines, lines[1:], strict=False
    ):
        if step > after_step and truth > 5.0:
            worst = max(worst, abs(eta_b - (eta_a - (clock_b - clock_a))) / eta_a)
    return worst


def test_eta_is_steady_between_log_lines_where_a_naive_rate_jumps():
    steady = _simulate(_Steady())
    naive = _simulate(_Naive())
    # after the first epoch (its pause is the first one seen) nothing jumps by 10 %
    assert _worst_jump(steady, after_step=STEPS_PER_EPOCH + LOG_EVERY) < 0.1
    assert _worst_jump(naive, after_step=STEPS_PER_EPOCH + LOG_EVERY) > 0.2  # the test can fail


def test_eta_converges_to_the_true_time_left():
    lines = _simulate(_Steady())
    for step, _, eta, truth in lines:
        if step >= 2 * STEPS_PER_EPOCH:
            # off by at most the pause that follows a line at an epoch's end, plus noise
            assert abs(eta - truth) < 1.1 * PAUSE_S + 0.05 * truth, step
    assert lines[0][2] > 2 * lines[0][3]  # the warm-up window alone overestimates: it is dropped
    last = _simulate(_Steady())[-1]
    assert last[0] == TOTAL_STEPS and last[2] == 0.0


def test_the_warmup_window_counts_only_until_a_steady_one_arrives():
    eta = EtaEstimator(100)
    assert eta.remaining(0) is None
    eta.observe_window(10, 5.0)  # 0.5 s per step: compilation
    assert eta.remaining(10) == pytest.approx(90 * 0.5)
    eta.observe_window(10, 0.5)
    assert eta.seconds_per_step() == pytest.approx(0.05)
    eta.observe_pause(20, 2.0)  # 0.1 s per step so far, charged to the 80 left
    assert eta.remaining(20) == pytest.approx(80 * (0.05 + 0.1))


def test_a_resumed_run_amortizes_pauses_over_its_own_steps():
    eta = EtaEstimator(100, first_step=50)
    eta.observe_window(10, 1.0)
    eta.observe_window(10, 1.0)
    eta.observe_pause(70, 4.0)  # 20 steps since the resume
    assert eta.pause_seconds_per_step() == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-:--"), (0.4, "0:00"), (12.3, "0:12"), (126, "2:06"), (3723, "1:02:03")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
