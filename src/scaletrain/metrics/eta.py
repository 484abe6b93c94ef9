"""A steady estimate of the time a run has left: the steady step rate plus the pauses to come.

A naive rate (steps done / time elapsed) counts the first steps' warm-up and every
validation and checkpoint as step time, so it swings each time a pause lands in its window
(seen: 1:33 -> 2:06 while steps went 360 -> 640). Here steps and pauses are kept apart:

- the step rate is the training time per step over the most recent log windows covering
  about a tenth of the run, the first (warm-up, compilation) window left out once another
  exists;
- the pauses (validation, checkpoints) are amortized per step up to the last pause seen
  and charged to the steps still to run, so between two pauses that share does not move.
"""

from __future__ import annotations

from collections import deque

RECENT_FRACTION = 0.1  # the step rate is measured over the last ~10 % of the run's steps


class EtaEstimator:
    """Seconds left from log windows (training time only) and pauses, fed as they happen."""

    def __init__(self, total_steps: int, *, first_step: int = 0):
        self.total_steps = total_steps
        self._first_step = first_step  # a resumed run starts here
        self._windows: deque[tuple[int, float]] = deque()  # (steps, seconds) newest last
        self._horizon = max(1, round(RECENT_FRACTION * total_steps))
        self._warmup: tuple[int, float] | None = None
        self._pause_seconds = 0.0
        self._pause_steps = 0  # steps from the start to the last pause

    def observe_window(self, num_steps: int, seconds: float) -> None:
        """A log window: `num_steps` updates that took `seconds` of training time."""
        if num_steps <= 0 or seconds <= 0:
            return
        if self._warmup is None:  # the first window: warm-up, compilation, cold caches
            self._warmup = (num_steps, seconds)
            return
        self._windows.append((num_steps, seconds))
        while sum(n for n, _ in self._windows) - self._windows[0][0] >= self._horizon:
            self._windows.popleft()  # the rest still covers the horizon

    def observe_pause(self, step: int, seconds: float) -> None:
        """Time spent at `step` outside the steps (validation, a checkpoint)."""
        self._pause_seconds += max(0.0, seconds)
        self._pause_steps = max(self._pause_steps, step - self._first_step)

    def seconds_per_step(self) -> float | None:
        """Over the recent steady windows; the warm-up window only while it is the only one."""
        windows = self._windows or ([self._warmup] if self._warmup else [])
        steps = sum(n for n, _ in windows)
        return sum(s for _, s in windows) / steps if steps else None

    def pause_seconds_per_step(self) -> float:
        return self._pause_seconds / self._pause_steps if self._pause_steps else 0.0

    def remaining(self, step: int) -> float | None:
        """Seconds left after `step`; None before the first window."""
        per_step = self.seconds_per_step()
        if per_step is None:
            return None
        left = max(0, self.total_steps - step)
        return left * (per_step + self.pause_seconds_per_step())


def format_duration(seconds: float | None) -> str:
    """`0:12`, `2:06`, `1:02:03`; `-:--` while unknown."""
    if seconds is None:
        return "-:--"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{rest:02d}" if hours else f"{minutes}:{rest:02d}"
