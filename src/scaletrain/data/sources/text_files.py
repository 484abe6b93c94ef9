"""Text sources: ``text_csv`` and ``text_jsonl`` (text + label), ``text_corpus`` (files, for LM).

Texts stay raw here; the TextEncoder is fit on the train split later (pipeline.py / lm.py).
A corpus keeps one sample per file, in sorted path order, with the file as its split group.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from scaletrain.config import DataConfig
from scaletrain.data.raw import RawData, RawTexts
from scaletrain.data.sources.files import check_file, csv_labels, read_csv_table
from scaletrain.data.sources.registry import register_source
from scaletrain.errors import ConfigError, DataError


@register_source("text_csv")
def read_text_csv(cfg: DataConfig) -> RawData:
    """A text column and a label column of a CSV file."""
    table = read_csv_table(check_file(cfg.path))
    text_index = table.column_index(cfg.text.column, role="text (data.text.column)")
    texts = np.array([row[text_index] for row in table.rows], dtype=object)
    if cfg.task == "language_model":
        labels = np.zeros(len(texts))
    else:
        labels = csv_labels(table, table.column_index(cfg.label, role="label"), cfg=cfg)
    return RawData(
        inputs=RawTexts(texts),
        labels=labels,
        origin=str(table.path),
        row_lines=np.asarray(table.line_numbers),
        input_kind="text",
        raw_columns=[cfg.text.column],
    )


def jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) per non-blank line; bad JSON names its line."""
    try:
        with path.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{line_number}: not valid JSON ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise DataError(f"{path}:{line_number}: expected a JSON object per line")
                yield line_number, record
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None


@register_source("text_jsonl")
def read_text_jsonl(cfg: DataConfig) -> RawData:
    """One JSON object per line with a text key and a label key."""
    path = check_file(cfg.path)
    column, with_labels = cfg.text.column, cfg.task != "language_model"
    texts, labels, lines = [], [], []
    for line_number, record in jsonl_records(path):
        texts.append(_field(record, column, path=path, line=line_number, kind=str))
        if with_labels:
            labels.append(_field(record, cfg.label, path=path, line=line_number, kind=None))
        lines.append(line_number)
    if not texts:
        raise DataError(f"{path}: no records; expected one JSON object per line")
    return RawData(
        inputs=RawTexts(np.array(texts, dtype=object)),
        labels=_label_array(labels) if with_labels else np.zeros(len(texts)),
        origin=str(path),
        row_lines=np.asarray(lines),
        input_kind="text",
        raw_columns=[column],
    )


def _field(record: dict, key: str, *, path: Path, line: int, kind: type | None):
    if key not in record or record[key] is None:
        raise DataError(f"{path}:{line}: no value for key {key!r}")
    value = record[key]
    if kind is str and not isinstance(value, str):
        raise DataError(f"{path}:{line}: key {key!r} holds {type(value).__name__}; expected text")
    if kind is None and not isinstance(value, str | int | float):
        raise DataError(f"{path}:{line}: label {key!r} holds {type(value).__name__}")
    return value


def _label_array(labels: list) -> np.ndarray:
    if all(isinstance(label, int | float) and not isinstance(label, bool) for label in labels):
        return np.asarray(labels, dtype=np.float64)
    return np.asarray([str(label) for label in labels])


def corpus_files(path: str | None) -> list[Path]:
    """Files of a folder (recursively) or of a glob pattern, in sorted order."""
    if path is None:
        raise ConfigError("data.path: not set; give a folder or a glob of text files")
    root = Path(path).expanduser()
    if root.is_dir():
        files = sorted(item for item in root.rglob("*") if item.is_file())
    else:
        files = sorted(Path(item) for item in glob.glob(str(root), recursive=True))
        files = [item for item in files if item.is_file()]
    if not files:
        raise DataError(f"data.path: no files found at {path}")
    return files


def read_text(path: Path) -> str:
    """A whole file as UTF-8 text."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None


@register_source("text_corpus")
def read_text_corpus(cfg: DataConfig) -> RawData:
    """Every file of a folder or glob as one text, for language modeling."""
    if cfg.task not in ("auto", "language_model"):
        raise ConfigError(
            f"data.task: `text_corpus` has no labels, so it trains language models; got "
            f"{cfg.task!r}, expected language_model"
        )
    files = corpus_files(cfg.path)
    texts = np.array([read_text(path) for path in files], dtype=object)
    if not any(texts):
        raise DataError(f"data.path: every file under {cfg.path} is empty")
    return RawData(
        inputs=RawTexts(texts),
        labels=np.zeros(len(texts)),
        origin=str(cfg.path),
        task="language_model",
        groups=np.arange(len(texts)),
        input_kind="text",
    )


def read_texts_file(path: Path, *, column: str) -> RawTexts:
    """Predict inputs: .txt (one text per line), .csv or .jsonl (the ``column`` field)."""
    path = check_file(path, key="inputs file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        table = read_csv_table(path)
        index = table.column_index(column, role="text")
        return RawTexts(np.array([row[index] for row in table.rows], dtype=object))
    if suffix == ".jsonl":
        texts = [
            _field(record, column, path=path, line=line, kind=str)
            for line, record in jsonl_records(path)
        ]
        return RawTexts(np.array(texts, dtype=object))
    lines = [line for line in read_text(path).splitlines() if line.strip()]
    return RawTexts(np.array(lines, dtype=object))
