"""Data handed to the Python API: ``{"train": Dataset | (inputs, targets), "val": …, "test": …}``.

Arrays and tensors take the same path as files (task inference, split, preprocessing). A
``Dataset`` is used as-is: no preprocessing, no layout change (a warning says so, once per
process, unless ``data.normalize`` and, for regression, ``data.normalize_target`` are
``none``); the spec comes from its first sample, and for classification from its targets
(``dataset.targets`` if present, else one pass reading every sample's target).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from scaletrain.config import DataConfig
from scaletrain.data.bundle import DataBundle, DataSpec, Split
from scaletrain.data.loaders.dataset_loader import NamedSamples
from scaletrain.data.pipeline import bundle_from_raw
from scaletrain.data.raw import RawData, image_layout
from scaletrain.data.sources.files import first_non_finite
from scaletrain.data.transforms.preprocess import Preprocessor
from scaletrain.data.transforms.split import split_indices
from scaletrain.errors import DataError, UserError

SPLIT_NAMES = ("train", "val", "test")


def build_user_data(cfg: DataConfig, user_data: Any, *, seed: int) -> DataBundle:
    """Bundle user arrays (full pipeline) or user Datasets (used as-is)."""
    parts = _check_parts(user_data)
    if isinstance(parts["train"], Dataset):
        return _bundle_from_datasets(cfg, parts, seed=seed)
    raw, provided = _concat_arrays(parts)
    return bundle_from_raw(cfg, raw, seed=seed, provided=provided)


def _check_parts(user_data: Any) -> dict[str, Any]:
    if not isinstance(user_data, Mapping):
        raise UserError(
            f"data: expected a dict like {{'train': (inputs, targets)}}, got "
            f"{type(user_data).__name__}"
        )
    unknown = sorted(set(user_data) - set(SPLIT_NAMES))
    if unknown:
        raise UserError(f"data: unknown split {unknown[0]!r}; expected train, val or test")
    parts = {name: user_data[name] for name in SPLIT_NAMES if user_data.get(name) is not None}
    if "train" not in parts:
        raise UserError("data: needs a 'train' entry (a Dataset or (inputs, targets))")
    as_dataset = isinstance(parts["train"], Dataset)
    for name, part in parts.items():
        if isinstance(part, Dataset) != as_dataset:
            raise UserError(
                f"data[{name!r}]: a {type(part).__name__}, but data['train'] is "
                f"{'a Dataset' if as_dataset else 'arrays'}; pass every split the same way"
            )
        if not as_dataset and (not isinstance(part, tuple | list) or len(part) != 2):
            raise UserError(
                f"data[{name!r}]: expected a Dataset or (inputs, targets), got "
                f"{type(part).__name__}"
            )
    return parts


def _concat_arrays(parts: dict[str, Any]) -> tuple[RawData, dict[str, np.ndarray]]:
    inputs, labels, provided, start = [], [], {}, 0
    for name, (x, y) in parts.items():
        x, y = _to_numpy(x), _to_numpy(y)
        if len(x) != len(y):
            raise UserError(f"data[{name!r}]: {len(x)} inputs but {len(y)} targets")
        if len(x) == 0:
            raise UserError(f"data[{name!r}]: has no samples")
        bad = first_non_finite(x.astype(np.float64))
        if bad is not None:
            raise DataError(f"data[{name!r}]: inputs of sample {bad[0]} are not finite")
        if inputs and x.shape[1:] != inputs[0].shape[1:]:
            raise UserError(
                f"data[{name!r}]: samples of shape {x.shape[1:]}, but data['train'] has "
                f"{inputs[0].shape[1:]}"
            )
        inputs.append(x)
        labels.append(y)
        provided[name] = np.arange(start, start + len(x))
        start += len(x)
    images, is_image = image_layout(np.concatenate(inputs).astype(np.float32))
    raw = RawData(images, np.concatenate(labels), origin="data (Python API)", is_image=is_image)
    return raw, provided


def _to_numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _bundle_from_datasets(cfg: DataConfig, parts: dict[str, Dataset], *, seed: int) -> DataBundle:
    train = parts["train"]
    sample = train[0]
    if not isinstance(sample, tuple | list) or len(sample) != 2:
        raise UserError(f"data['train'][0]: expected (input, target), got {type(sample).__name__}")
    first_input = torch.as_tensor(sample[0])
    is_classification = _is_integer(sample[1])
    task = "classification" if is_classification else "regression"
    if cfg.task not in ("auto", task):
        raise UserError(
            f"data.task: {cfg.task!r}, but data['train'] targets look like {task} "
            "(integer targets mean classification); a Dataset is used as-is"
        )
    _warn_not_normalized(cfg, task)
    targets = {name: _dataset_targets(part) for name, part in parts.items()}
    splits = _split_dataset(cfg, parts, targets, seed=seed)
    num_outputs = int(torch.as_tensor(sample[1]).numel())
    class_names = class_counts = None
    if is_classification:
        num_outputs = max(int(values.max()) for values in targets.values()) + 1
        class_names = _class_names(train, num_outputs)
        train_ids = targets["train"][splits["train"].indices]
        class_counts = torch.bincount(train_ids, minlength=num_outputs).tolist()
    spec = DataSpec(
        task=task,
        input_shape=tuple(first_input.shape),
        input_dtype=torch.float32 if first_input.is_floating_point() else torch.int64,
        num_outputs=num_outputs,
        class_names=class_names,
        class_counts=class_counts,
        is_image=first_input.ndim == 3,
    )
    split_of = {name: Split(None, None, dataset=subset) for name, subset in splits.items()}
    return DataBundle(
        spec,
        split_of["train"],
        split_of.get("val"),
        split_of.get("test"),
        Preprocessor("none", is_image=spec.is_image),
    )


def _warn_not_normalized(cfg: DataConfig, task: str) -> None:
    """The scaling arrays get does not happen to a Dataset (Python's default warning filter
    shows it once per process)."""
    skipped = ["inputs (data.normalize)"] if cfg.normalize != "none" else []
    if task == "regression" and cfg.normalize_target != "none":
        skipped.append("regression targets (data.normalize_target)")
    if not skipped:
        return
    warnings.warn(
        f"data['train'] is a Dataset, used as-is: its {' and '.join(skipped)} are not "
        "standardized; scale them in the Dataset, pass (inputs, targets) arrays instead, or "
        "set those keys to `none` to say the data is ready",
        UserWarning,
        stacklevel=2,
    )


def _is_integer(target: Any) -> bool:
    if isinstance(target, torch.Tensor):
        return not target.is_floating_point() and target.numel() == 1
    return isinstance(target, int | np.integer)


def _dataset_targets(dataset: Dataset) -> torch.Tensor:
    """All targets (class ids): the ``targets`` attribute, else one pass over the samples."""
    dataset = NamedSamples(dataset)  # a sample that fails is named by its index
    if not _is_integer(dataset[0][1]):
        return torch.empty(0, dtype=torch.int64)
    values = getattr(dataset.dataset, "targets", None)
    if values is None:
        values = [dataset[index][1] for index in range(len(dataset))]
    values = torch.as_tensor(np.asarray(values)).reshape(-1).to(torch.int64)
    if len(values) and values.min() < 0:
        raise DataError(f"Dataset targets must be class ids >= 0, got {int(values.min())}")
    return values


def _split_dataset(
    cfg: DataConfig, parts: dict[str, Dataset], targets: dict[str, torch.Tensor], *, seed: int
) -> dict[str, Subset]:
    train = parts["train"]
    labels = targets["train"].numpy() if cfg.stratify and len(targets["train"]) else None
    cut = split_indices(
        len(train),
        val_fraction=0.0 if "val" in parts else cfg.val_fraction,
        test_fraction=0.0 if "test" in parts else cfg.test_fraction,
        seed=seed,
        stratify_labels=labels,
    )
    subsets = {"train": Subset(train, cut.train.tolist())}
    for name, rows in (("val", cut.val), ("test", cut.test)):
        if name in parts:
            subsets[name] = Subset(parts[name], list(range(len(parts[name]))))
        elif rows is not None:
            subsets[name] = Subset(train, rows.tolist())
    return subsets


def _class_names(dataset: Dataset, num_classes: int) -> list[str]:
    names = getattr(dataset, "classes", None)  # torchvision's convention
    if names is not None and len(names) == num_classes:
        return [str(name) for name in names]
    return [str(index) for index in range(num_classes)]
