"""Rich progress bar with loss, lr, samples/s and ETA; silent when not on a terminal."""

from __future__ import annotations

import sys

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress


class Progress:
    def __init__(self, total_steps: int, *, enabled: bool):
        self._bar = None
        self._total = total_steps
        self._plain = enabled and not sys.stderr.isatty()
        self._next_tenth = 1
        if enabled and sys.stderr.isatty():
            self._bar = RichProgress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._task = self._bar.add_task("train", total=total_steps, info="")
            self._bar.start()

    def update(self, step: int, record: dict) -> None:
        if self._bar is None and not self._plain:
            return
        info = (
            f"loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
            f"{record['samples_per_s']:,.0f} samples/s"
        )
        if record.get("mfu"):
            info += f"  MFU {record['mfu']:.1%}"
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
        elif step * 10 >= self._next_tenth * self._total:  # plain lines at each 10 %
            self._next_tenth = step * 10 // self._total + 1
            print(f"step {step}/{self._total}  {info}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
