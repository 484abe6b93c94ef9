"""Console progress on stderr: a rich bar on a terminal, plain lines off one (make, CI, logs).

Both carry the step, the epoch, loss, lr, throughput, MFU, the elapsed time and a steady ETA
(`metrics.eta`: the steady step rate plus the pauses still to come), and each validation
prints one line: ``epoch 3/30  val.loss 0.0410  val.accuracy 0.9890  best``.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn
from rich.progress import Progress as RichProgress
from rich.text import Text

from scaletrain.metrics.eta import EtaEstimator, format_duration

# Shown after val.loss in the validation line when logged (besides the monitored metric).
HEADLINE_METRICS = ("accuracy", "mae", "r2", "perplexity")
PLAIN_LINES = 10  # off a terminal: one step line per tenth of the run


class _ClockColumn(ProgressColumn):
    """Elapsed since the start and the ETA of the last log step, counted down between them."""

    def render(self, task) -> Text:
        now = time.perf_counter()
        elapsed = format_duration(now - task.fields["started"])
        deadline = task.fields["deadline"]
        eta = format_duration(None if deadline is None else max(0.0, deadline - now))
        return Text(f"elapsed {elapsed}  eta {eta}")


class Progress:
    """The run's console output; `enabled` is false on ranks > 0 and with log.progress off."""

    def __init__(
        self,
        total_steps: int,
        *,
        steps_per_epoch: int,
        monitor: str = "val.loss",
        enabled: bool,
        first_step: int = 0,
        stream: TextIO | None = None,
    ):
        self._total, self._steps_per_epoch = total_steps, max(1, steps_per_epoch)
        self._num_epochs = math.ceil(total_steps / self._steps_per_epoch)
        self._monitor = monitor.partition(".")[2] or "loss"
        self.eta = EtaEstimator(total_steps, first_step=first_step)
        self._started = time.perf_counter()
        self._stream = stream or sys.stderr
        terminal = enabled and self._stream.isatty()
        self._enabled, self._bar = enabled, None
        self._next_line = first_step * PLAIN_LINES // max(1, total_steps) + 1
        self._latest_val = ""
        if terminal:
            self._bar = RichProgress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[epoch]}  {task.fields[info]}  {task.fields[val]}"),
                _ClockColumn(),
                console=Console(file=self._stream),
                transient=False,
            )
            self._task = self._bar.add_task(
                "train",
                total=total_steps,
                completed=first_step,
                epoch=self.epoch_label(first_step),
                info="",
                val="",
                started=self._started,
                deadline=None,
            )
            self._bar.start()

    def epoch_label(self, step: int) -> str:
        """`epoch 3/30`: the epoch `step` belongs to (its last step included)."""
        epoch = min(self._num_epochs, max(1, math.ceil(step / self._steps_per_epoch)))
        return f"epoch {epoch}/{self._num_epochs}"

    def observe_window(self, num_steps: int, seconds: float) -> None:
        self.eta.observe_window(num_steps, seconds)

    def observe_pause(self, step: int, seconds: float) -> None:
        self.eta.observe_pause(step, seconds)

    def update(self, step: int, record: dict) -> None:
        """A train record was written at `step`."""
        if not self._enabled:
            return
        info = (
            f"loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
            f"{record['samples_per_s']:,.0f} samples/s"
        )
        if record.get("tokens_per_s"):
            info += f"  {record['tokens_per_s']:,.0f} tokens/s"
        if record.get("mfu"):
            info += f"  MFU {record['mfu']:.1%}"
        now, eta = time.perf_counter(), self.eta.remaining(step)
        if self._bar is not None:
            deadline = None if eta is None else now + eta
            label = self.epoch_label(step)
            self._bar.update(self._task, completed=step, epoch=label, info=info, deadline=deadline)
        elif step * PLAIN_LINES >= self._next_line * self._total:
            self._next_line = step * PLAIN_LINES // self._total + 1
            clock = f"elapsed {format_duration(now - self._started)}  eta {format_duration(eta)}"
            self._print(f"step {step}/{self._total}  {self.epoch_label(step)}  {info}  {clock}")

    def validation(self, step: int, *, loss: float, metrics: dict, improved: bool) -> None:
        """One line per validation; the bar keeps the monitored value."""
        if not self._enabled:
            return
        values = {"loss": loss, **{k: v for k, v in metrics.items() if _is_number(v)}}
        shown = dict.fromkeys(("loss", self._monitor, *HEADLINE_METRICS))
        parts = [f"val.{name} {values[name]:.4f}" for name in shown if name in values]
        line = f"{self.epoch_label(step)}  {'  '.join(parts)}" + ("  best" if improved else "")
        if self._monitor in values:
            self._latest_val = f"val.{self._monitor} {values[self._monitor]:.4f}"
        if self._bar is not None:
            self._bar.update(self._task, val=self._latest_val)
        self._print(line)

    def _print(self, line: str) -> None:
        if self._bar is not None:
            self._bar.console.print(line, highlight=False, markup=False)
        else:
            print(line, file=self._stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
