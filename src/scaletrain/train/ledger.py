"""The nothing-lost ledger: which global samples each optimizer step trained on, as ranges.

A step takes the positions [start, stop) of its epoch's order, and that order is a function
of (seed, epoch) alone (`data.loader.epoch_order`), so `(epoch, start, stop)` names the
step's global sample ids exactly, for any world size. Consecutive steps of one epoch merge
into one line, so a plain run writes about one line per log interval:

    {"steps": [1, 40], "epoch": 0, "positions": [0, 1280], "batch": 32}
    {"steps": [41, 41], "epoch": 0, "positions": [1280, 1312], "batch": 32, "skipped": "nonfinite"}
    {"step": 41, "epoch": 0, "positions": [1280, 1312], "skipped": "offending"}

`skipped: nonfinite|spike` steps counted as a step but updated nothing; `offending` batches
were passed over after a rollback (no step). Lines past a checkpoint are dropped when a run
resumes or rolls back to it, so the ledger always describes the weights that exist.
"""

from __future__ import annotations

import json
from pathlib import Path

from scaletrain.fileio import atomic_write_text, read_jsonl
from scaletrain.runfiles import checked_records

LEDGER = "ledger.jsonl"


def batch_span(loader, batch) -> list[int]:
    """[epoch, start, stop] of the step the loader just handed out (JSON-ready)."""
    stop = loader.samples_consumed
    return [loader.epoch, stop - batch.num_samples_global, stop]


class Ledger:
    """Buffered in memory; flushed at log steps and before every checkpoint (cheap)."""

    def __init__(self, path: Path, *, enabled: bool):
        self.path = path
        self.enabled = enabled
        self._pending: list[dict] = []

    def record(self, step: int, span, *, skipped: str | None = None) -> None:
        """Update `step` used the samples of `span`; `skipped`: it changed no weight."""
        if not self.enabled:
            return
        epoch, start, stop = span
        last = self._pending[-1] if self._pending else None
        if (
            skipped is None
            and last is not None
            and "steps" in last
            and "skipped" not in last
            and last["epoch"] == epoch
            and last["steps"][1] == step - 1
            and last["positions"][1] == start
            and _all_full(last)
        ):
            last["steps"][1], last["positions"][1] = step, stop
            return
        line = {"steps": [step, step], "epoch": epoch, "positions": [start, stop]}
        line["batch"] = stop - start
        self._pending.append({**line, "skipped": skipped} if skipped else line)

    def passed_over(self, step: int, span) -> None:
        """A batch the run skips on purpose (it made a rollback necessary)."""
        if self.enabled:
            epoch, start, stop = span
            self._pending.append(
                {"step": step, "epoch": epoch, "positions": [start, stop], "skipped": "offending"}
            )

    def flush(self) -> None:
        if self._pending:
            with open(self.path, "a") as handle:
                handle.write("".join(json.dumps(line) + "\n" for line in self._pending))
            self._pending = []

    def truncate(self, after_step: int) -> None:
        """Forget what was trained after `after_step` (it is being undone)."""
        if not self.enabled:
            return
        self._pending = []
        lines = read_ledger(self.path)
        kept = [cut for line in lines if (cut := _cut(line, after_step)) is not None]
        atomic_write_text(self.path, "".join(json.dumps(line) + "\n" for line in kept))


def read_ledger(path: Path) -> list[dict]:
    """Ledger lines; a last line cut short by a crash is dropped, any other bad one refused."""
    return checked_records(path, read_jsonl(path))


def expand_ledger(lines: list[dict]) -> list[tuple[int, int, int, int, str | None]]:
    """One (step, epoch, start, stop, skipped) per step or passed-over batch, in order."""
    rows = []
    for line in lines:
        epoch, (start, stop) = line["epoch"], line["positions"]
        if "step" in line:
            rows.append((line["step"], epoch, start, stop, line.get("skipped")))
            continue
        first, last = line["steps"]
        size = line["batch"]
        for index, step in enumerate(range(first, last + 1)):
            low = start + index * size
            high = stop if step == last else low + size
            rows.append((step, epoch, low, high, line.get("skipped")))
    return rows


def _cut(line: dict, after_step: int) -> dict | None:
    if "step" in line:
        return line if line["step"] <= after_step else None
    first, last = line["steps"]
    if last <= after_step:
        return line
    if first > after_step:
        return None
    start = line["positions"][0]
    stop = start + line["batch"] * (after_step - first + 1)  # all full batches but the last
    return {**line, "steps": [first, after_step], "positions": [start, stop]}


def _all_full(line: dict) -> bool:
    """Merged steps are all `batch` samples; a short (epoch-final) one ends the line."""
    num_steps = line["steps"][1] - line["steps"][0] + 1
    return line["positions"][1] - line["positions"][0] == line["batch"] * num_steps
