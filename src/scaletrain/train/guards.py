"""Numerical guards: one fused all-reduce per step decides, identically on every rank, whether
the optimizer step runs (`step`), is skipped, rolls back to the last checkpoint, or stops.

The same reduction carries the two host flags every rank must agree on at a step boundary:
a SIGTERM/SIGINT received by any rank, and rank 0's `checkpoint.every_minutes` clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import torch

from scaletrain.config import GuardConfig
from scaletrain.errors import CheckpointError, UserError


class DivergedError(UserError):
    """train.guard gave up: the message says why and which checkpoint holds the last state."""


@dataclass(frozen=True)
class Verdict:
    action: str = "step"  # step | skip | rollback | stop
    reason: str | None = None  # nonfinite | spike
    loss: float | None = None  # the step's global mean loss (when it was reduced)
    interrupt: bool = False  # some rank received SIGTERM/SIGINT
    save_due: bool = False  # rank 0's every_minutes clock ran out

    @property
    def bad(self) -> bool:
        return self.reason is not None


class StepGuard:
    """Reads the step's loss and gradient norm at the step boundary, on every rank alike."""

    def __init__(self, cfg: GuardConfig, *, strategy, log_every_steps: int):
        self.cfg = cfg
        self.strategy = strategy
        self.log_every_steps = log_every_steps
        self.window: deque[float] = deque(maxlen=cfg.spike.window)
        self.consecutive_bad = 0
        self.bad_spans: list[list[int]] = []  # (epoch, start, stop) of the current bad streak

    def check(self, step: int, *, loss, grad_norm, stop_requested: bool, save_due: bool, span):
        """Verdict for update `step` (1-based), after backward and clipping, before the step.

        Cost: one all-reduce of up to 4 numbers and one host sync per step while it is on
        (off: only at log steps, where the loop syncs anyway).
        """
        checking = self.cfg.nonfinite != "off"
        world = self.strategy.world_size
        if not checking and world == 1:  # nothing to agree on: no reduction, no host sync
            return Verdict(interrupt=stop_requested, save_due=save_due)
        if not checking and world > 1 and step % self.log_every_steps:
            return Verdict()
        # Sums stay non-finite when any rank's value is (NaN and inf propagate; inf - inf is
        # NaN), so the raw values travel: few small ops per step, one vector, one read.
        values = []
        if checking:
            values.append(loss.detach().float())
            if grad_norm is not None:  # None under a GradScaler, which handles infs itself
                values.append(_local(grad_norm).detach().float())
        if world > 1:
            flags = torch.tensor([float(stop_requested), float(save_due)])
            values.extend(flags.to(loss.device).unbind())
            *values, num_stop, num_save = self.strategy.all_reduce_sum(
                torch.stack(values)
            ).tolist()  # the step's one host sync
        else:
            values = torch.stack(values).tolist()  # the step's one host sync
            num_stop, num_save = stop_requested, save_due
        verdict = Verdict(interrupt=num_stop > 0, save_due=num_save > 0)
        if not checking:
            return verdict
        nonfinite = not all(math.isfinite(value) for value in values)
        global_loss = values[0]  # the ranks' shares of the step's mean loss, summed
        reason = "nonfinite" if nonfinite else self._spike(global_loss)
        if reason is None:
            self.consecutive_bad, self.bad_spans = 0, []
            self.window.append(global_loss)
            return Verdict("step", None, global_loss, verdict.interrupt, verdict.save_due)
        self.consecutive_bad += 1
        self.bad_spans.append(list(span))
        action = self._action(reason)
        loss_value = math.nan if nonfinite else global_loss
        return Verdict(action, reason, loss_value, verdict.interrupt, verdict.save_due)

    def _spike(self, loss: float) -> str | None:
        threshold = self.cfg.spike.threshold
        if threshold is None or len(self.window) < self.window.maxlen:
            return None
        # plain float sums: statistics.pstdev's exact arithmetic cost ~170 us per step
        mean = math.fsum(self.window) / len(self.window)
        spread = math.sqrt(math.fsum((x - mean) ** 2 for x in self.window) / len(self.window))
        return "spike" if spread > 0 and (loss - mean) / spread > threshold else None

    def _action(self, reason: str) -> str:
        policy = self.cfg.nonfinite
        in_a_row = self.consecutive_bad >= self.cfg.max_consecutive_bad
        if policy == "skip":
            return "stop" if in_a_row else "skip"
        if policy == "rollback":
            return "rollback" if in_a_row or reason == "spike" else "skip"
        return "stop"

    def describe(self, verdict: Verdict, step: int) -> str:
        what = (
            "a non-finite loss or gradient"
            if verdict.reason == "nonfinite"
            else (
                f"a loss spike ({verdict.loss:.4g}, over {self.cfg.spike.threshold} standard "
                f"deviations above the last {len(self.window)} steps)"
            )
        )
        return f"step {step}: {what}; {self.consecutive_bad} bad step(s) in a row"

    def rolled_back(self) -> None:
        """After a rollback the moving window starts again from the restored state."""
        self.consecutive_bad, self.bad_spans = 0, []

    def state_dict(self) -> dict:
        return {"window": list(self.window), "consecutive_bad": self.consecutive_bad}

    def load_state_dict(self, state: dict) -> None:
        self.window.clear()
        self.window.extend(state.get("window", []))
        self.consecutive_bad = int(state.get("consecutive_bad", 0))


def on_bad_step(verdict: Verdict, step: int, guard: StepGuard, saver, checkpoint, log) -> bool:
    """Count and log a bad step, then skip it, roll back or stop as train.guard says.

    Returns True after a rollback (the loop must restart its epoch iterator from the
    restored loader position). `saver` is the loop's Checkpointer, `checkpoint` its save.
    """
    state, cfg = saver.state, guard.cfg
    state.counters["skipped_steps"] += 1
    detail = guard.describe(verdict, step)
    action = verdict.action
    if action == "rollback" and state.counters["rollbacks"] >= cfg.max_rollbacks:
        action, detail = "stop", f"{detail}; {cfg.max_rollbacks} rollbacks did not help"
    if action == "rollback":
        try:
            path = saver.rollback(lr_backoff=cfg.lr_backoff)
        except CheckpointError:
            action, detail = "stop", f"{detail}; no checkpoint to roll back to yet"
        else:
            detail += f"; rolled back to {path.name}, lr x{state.schedule.backoff:g} from now on"
            log({"event": "rollback", "step": state.step, "detail": detail})
            return True
    log({"event": "skip" if action == "skip" else "stop", "step": step, "detail": detail})
    if action == "stop":
        state.skip_spans.append(guard.bad_spans[-1])  # a resume passes over this batch
        saver.ledger.passed_over(step, guard.bad_spans[-1])
        checkpoint("guard stop")
        raise DivergedError(
            f"train.guard stopped the run at {detail}; the state before it is in "
            f"{saver.last_path} (resume with a lower optim.lr, or fix the data)"
        )
    return False


def pass_over(state, ledger, span: list[int]) -> None:
    """Do not train on a batch that made a rollback necessary (recorded, counted)."""
    state.counters["skipped_batches"] += 1
    ledger.passed_over(state.step + 1, span)


def _local(value: torch.Tensor) -> torch.Tensor:
    """FSDP's gradient norm is a replicated DTensor: its local value is the full norm."""
    to_local = getattr(value, "to_local", None)
    return to_local() if to_local is not None else value
