"""`Run.history`: one record per epoch from `metrics.jsonl`, like Keras' `History.history`."""

from __future__ import annotations

from pathlib import Path

from scaletrain.errors import UserError
from scaletrain.fileio import read_jsonl

# per-class lists, the confusion matrix and sample counts are not curves
_NOT_CURVES = ("per_class", "confusion_matrix", "num_samples")


def read_history(metrics_file: Path) -> list[dict]:
    """Per epoch: `epoch`, `step`, `train_loss`, `train_<metric>`, `val_loss`, `val_<metric>`.

    Training columns come from the `train_epoch` records, validation ones from the `val`
    records (the epoch's last validation where `train.eval_every_steps` validates more often).
    """
    rows: dict[int, dict] = {}
    for record in read_jsonl(metrics_file):
        prefix = {"train_epoch": "train", "val": "val"}.get(record.get("split"))
        if prefix is None or "epoch" not in record:
            continue
        row = rows.setdefault(record["epoch"], {"epoch": record["epoch"]})
        row["step"] = max(row.get("step", 0), record.get("step", 0))
        row[f"{prefix}_loss"] = record.get("loss")
        for name, value in (record.get("metrics") or {}).items():
            if name not in _NOT_CURVES and isinstance(value, int | float):
                row[f"{prefix}_{name}"] = value
    return [rows[epoch] for epoch in sorted(rows)]


def history_frame(history: list[dict]):
    """The history as a pandas DataFrame indexed by epoch."""
    try:
        import pandas
    except ImportError:
        raise UserError(
            "run.history_frame() needs pandas (pip install pandas); run.history is the same "
            "records as a list of dicts"
        ) from None
    return pandas.DataFrame(history).set_index("epoch")
