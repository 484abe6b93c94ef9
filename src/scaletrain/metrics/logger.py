"""The run's metric writer: ``metrics.jsonl`` (the record) mirrored to TensorBoard.

One JSON object per line, written only by rank 0. Record shapes written by the loop:

- train: ``{"split": "train", "step", "epoch", "time_s", "loss", "lr", "grad_norm",
  "samples_per_s", "mfu", "rss_mb"}``
- eval: ``{"split": "val" | "test", "step", "epoch", "time_s", "loss",
  "metrics": {... as MetricSet.compute returns ...}}``
- train epoch (at the end of every epoch): ``{"split": "train_epoch", "step", "epoch",
  "time_s", "loss" (mean over the epoch), "metrics": {"accuracy" | "mae" | "perplexity"}}``
- event: ``{"event": "checkpoint" | "early_stop" | "skip" | "rollback" | "resume" | ...,
  "step", "time_s", "detail": str}``

TensorBoard gets every numeric scalar under ``<split>/<key>`` at ``global_step = step``;
the nested ``metrics`` dict adds no level (``val/accuracy``), other nested dicts do, and
lists (per-class values, confusion matrix) are left to the JSONL. Events become text under
``events/<event>``. Non-finite floats are written as Python's ``NaN``/``Infinity``
literals, which ``json.loads`` reads back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from scaletrain.errors import CheckpointError
from scaletrain.fileio import read_jsonl

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tb"
_NOT_SCALARS = ("step", "split", "event")  # bookkeeping keys, not curves


class MetricsLogger:
    """Appends records to ``metrics.jsonl`` and mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: Path, *, tensorboard: bool, flush_every: int = 1):
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / METRICS_FILE
        _repair_tail(self.path)  # a resumed run appends after whole lines only
        self._file = self.path.open("a", encoding="utf-8")
        self._writer = _summary_writer(run_dir / TENSORBOARD_DIR) if tensorboard else None
        self._flush_every = flush_every  # records between flushes of both files
        self._num_unflushed = 0

    def log(self, record: dict) -> None:
        """Append one record (flushed every ``flush_every`` records, 1 = each line)."""
        self._file.write(json.dumps(record, default=_to_json) + "\n")
        if self._writer is not None:
            self._mirror(record)
        self._num_unflushed += 1
        if self._num_unflushed >= self._flush_every:
            self.flush()

    def log_hparams(self, hparams: dict, final_metrics: dict) -> None:
        """Link the flattened scalar config values to final metrics (TensorBoard HPARAMS tab)."""
        if self._writer is None:
            return
        values = {
            key: value
            for key, value in _flatten(hparams, separator=".").items()
            if isinstance(value, (bool, int, float, str))
        }
        results = {f"hparams/{key}": value for key, value in scalar_items(final_metrics).items()}
        # run_name "." writes into tb/ itself, not a new timestamped sub-run.
        self._writer.add_hparams(values, results, run_name=".")

    def log_histograms(self, model: nn.Module, step: int) -> None:
        """Weight and gradient histograms (copies every parameter to the host: log rarely)."""
        if self._writer is None:
            return
        for name, parameter in model.named_parameters():
            self._writer.add_histogram(f"weights/{name}", _host(parameter), global_step=step)
            if parameter.grad is not None:
                self._writer.add_histogram(f"grads/{name}", _host(parameter.grad), global_step=step)

    def flush(self) -> None:
        self._file.flush()
        if self._writer is not None:
            self._writer.flush()
        self._num_unflushed = 0

    def close(self) -> None:
        self.flush()
        self._file.close()
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _mirror(self, record: dict) -> None:
        step = record.get("step", 0)
        if "event" in record:
            detail = str(record.get("detail", ""))
            self._writer.add_text(f"events/{record['event']}", detail, global_step=step)
            return
        split = record.get("split", "run")
        curves = {key: value for key, value in record.items() if key not in _NOT_SCALARS}
        for key, value in scalar_items(curves).items():
            self._writer.add_scalar(f"{split}/{key}", value, global_step=step)


def read_metrics(run_dir: Path) -> list[dict]:
    """All records of a run (`fileio.read_jsonl`: a line cut short by a crash is dropped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; expected the run directory of a training run")
    return read_jsonl(path)


def scalar_items(record: Mapping, *, prefix: str = "") -> dict[str, int | float]:
    """Numeric scalars of a record, nested keys joined by "/" (``metrics`` adds no level)."""
    items: dict[str, int | float] = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            inner = prefix if key == "metrics" else f"{prefix}{key}/"
            items.update(scalar_items(value, prefix=inner))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            items[f"{prefix}{key}"] = value
    return items


def _flatten(tree: Mapping, *, separator: str, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, separator=separator, prefix=f"{prefix}{key}{separator}"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _summary_writer(log_dir: Path) -> Any:
    # Imported here: tensorboard takes about a second to import and may be switched off.
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir))


def _host(tensor: Tensor) -> Tensor:
    """A float32 host copy; a sharded (DTensor) parameter contributes this rank's shard."""
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.detach().float().cpu()  # numpy has no bfloat16


def _to_json(value: Any) -> Any:
    """numpy/torch scalars and paths that slip into a record."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"metrics record value {value!r} ({type(value).__name__}) is not JSON")


def _repair_tail(path: Path) -> None:
    """Drop an unfinished last line (or end a complete one) before appending to the file."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    try:
        json.loads(data[cut:])
    except json.JSONDecodeError:
        os.truncate(path, cut)
        return
    with path.open("ab") as file:
        file.write(b"\n")
