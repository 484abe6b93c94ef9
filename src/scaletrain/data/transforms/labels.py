"""Labels -> training targets: the task (when ``auto``), class ids 0..K-1 and their names.

Also the per-sample weights ``data.sampler: balanced`` draws by, computed from the targets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from scaletrain.data.raw import Task
from scaletrain.data.sources.files import first_non_finite
from scaletrain.errors import ConfigError, DataError

# `auto` calls integer labels classes only when there are few distinct values; more than
# this (or more than half the sample count) reads as a count-like regression target.
MAX_AUTO_CLASSES = 100


@dataclass(frozen=True)
class Targets:
    """Encoded targets: int64 (N,) class ids, or float32 (N, k) regression values."""

    task: Task
    values: torch.Tensor
    class_names: list[str] | None
    num_outputs: int


def encode_targets(
    labels: np.ndarray,
    *,
    task: Literal["auto", "classification", "regression"],
    class_names: list[str] | None,
    origin: str,
    declared: list[str] | None = None,
    locate: Callable[[int], str] | None = None,
) -> Targets:
    """Infer the task when ``auto``; remap classes to 0..K-1 in sorted order of their labels.

    With ``declared`` class names (``data.classes``), ids follow that order and a label
    outside it is an error naming its row.
    """
    labels = np.asarray(labels)
    if declared is not None and task != "regression":
        return _declared_classes(labels, declared, locate=locate or (lambda row: origin))
    if labels.dtype.kind in "USO":  # text labels are class names
        if task == "regression":
            raise DataError(f"{origin}: task regression needs numeric labels, got {labels[0]!r}")
        return _classes(labels.astype(str).reshape(-1), names=None, origin=origin)
    if labels.dtype.kind not in "biuf":
        raise DataError(f"{origin}: labels of dtype {labels.dtype}; expected numbers or names")
    values = labels.astype(np.float64)
    bad = first_non_finite(values)
    if bad is not None:
        raise DataError(f"{origin}: label of sample {bad[0]} (0-based) is not finite")
    if task == "auto":
        task = "classification" if _looks_like_classes(values) else "regression"
    if task == "classification":
        return _classes(values, names=class_names, origin=origin)
    regression = torch.from_numpy(values.reshape(len(values), -1).astype(np.float32))
    return Targets("regression", regression, None, num_outputs=regression.shape[1])


def _looks_like_classes(values: np.ndarray) -> bool:
    if values.ndim > 2 or (values.ndim == 2 and values.shape[1] != 1):
        return False
    if not np.array_equal(values, np.round(values)):
        return False
    num_unique = len(np.unique(values))
    return num_unique <= MAX_AUTO_CLASSES and num_unique <= max(2, len(values) // 2)


def _classes(labels: np.ndarray, *, names: list[str] | None, origin: str) -> Targets:
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(
            f"{origin}: classification needs one label per sample, got shape {labels.shape}"
        )
    if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
        row = int(np.argmax(labels != np.round(labels)))
        raise DataError(
            f"{origin}: classification needs integer labels or class names, sample {row} "
            f"(0-based) has {labels[row]}; set data.task=regression for continuous targets"
        )
    uniques, class_ids = np.unique(labels, return_inverse=True)
    if len(uniques) < 2:
        raise DataError(f"{origin}: every label is {uniques[0]}; classification needs 2+ classes")
    if labels.dtype.kind == "f":
        known = names is not None and uniques.min() >= 0 and uniques.max() < len(names)
        class_names = [names[int(u)] if known else str(int(u)) for u in uniques]
    else:
        class_names = [str(u) for u in uniques]
    class_ids = torch.from_numpy(class_ids.reshape(-1).astype(np.int64))
    return Targets("classification", class_ids, class_names, num_outputs=len(uniques))


def _declared_classes(
    labels: np.ndarray, declared: list[str], *, locate: Callable[[int], str]
) -> Targets:
    texts = labels.reshape(len(labels), -1)[:, 0]
    if texts.dtype.kind == "f" and np.array_equal(texts, np.round(texts)):
        texts = texts.astype(np.int64)  # 3.0 in a float column is class "3"
    texts = texts.astype(str)
    lookup = {name: index for index, name in enumerate(declared)}
    ids = np.array([lookup.get(text, -1) for text in texts], dtype=np.int64)
    unknown = np.flatnonzero(ids < 0)
    if len(unknown):
        row = int(unknown[0])
        raise DataError(
            f"{locate(row)}: label {str(texts[row])!r} is not among data.classes "
            f"({', '.join(declared)})"
        )
    return Targets("classification", torch.from_numpy(ids), list(declared), len(declared))


def balanced_weights(targets: torch.Tensor, task: str) -> torch.Tensor:
    """Per-sample weights 1 / (count of its class): every class drawn equally often."""
    if task != "classification":
        raise ConfigError("data.sampler: `balanced` needs a classification task")
    counts = torch.bincount(targets).to(torch.float64)
    return 1.0 / counts[targets]
