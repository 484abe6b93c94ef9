"""The shared pipeline: RawData -> targets -> split -> encoder and scaling fit on train."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from scaletrain.config import DataConfig
from scaletrain.data.bundle import DataBundle, DataSpec, Split
from scaletrain.data.lm import language_model_bundle
from scaletrain.data.raw import RawData
from scaletrain.data.transforms.image import ImageDecoder
from scaletrain.data.transforms.labels import Targets, balanced_weights, encode_targets
from scaletrain.data.transforms.preprocess import Preprocessor
from scaletrain.data.transforms.split import (
    SplitIndices,
    StratifyError,
    split_groups,
    split_indices,
)
from scaletrain.data.transforms.table import TableEncoder
from scaletrain.data.transforms.target import TargetScaler
from scaletrain.data.transforms.text import TextEncoder
from scaletrain.errors import ConfigError, DataError


def bundle_from_raw(
    cfg: DataConfig, raw: RawData, *, seed: int, provided: dict[str, np.ndarray] | None = None
) -> DataBundle:
    """The shared pipeline; ``provided`` maps split names to fixed sample indices of ``raw``."""
    task = cfg.task if cfg.task != "auto" else (raw.task or "auto")
    if task == "language_model":
        return language_model_bundle(cfg, raw, seed=seed)  # token windows, not samples
    targets = encode_targets(
        raw.labels,
        task=task,
        class_names=raw.class_names,
        origin=raw.origin,
        declared=cfg.classes,
        locate=raw.locate,
    )
    indices = _assign_splits(cfg, targets, raw, seed=seed, provided=provided)
    _check_train_classes(targets, indices, raw)
    encoder, encoded = fit_encoder(cfg, raw, train_rows=indices.train)
    inputs, is_image = _apply_layout(encoded, raw, cfg.layout)
    vocab_size = getattr(encoder, "vocab_size", None) or raw.vocab_size
    method = cfg.normalize if vocab_size is None and raw.input_kind != "text" else "none"
    num_scaled = encoder.num_numeric() if raw.input_kind == "table" else None
    preprocessor = Preprocessor.fit(
        method,
        inputs[torch.from_numpy(indices.train)],
        is_image=is_image,
        num_scaled=num_scaled,
        encoder=encoder,
    )
    preprocessor.target = fit_target_scaler(cfg, targets, train_rows=indices.train)
    values = (
        targets.values
        if preprocessor.target is None
        else preprocessor.target.transform(targets.values)
    )

    def make_split(rows: np.ndarray | None) -> Split | None:
        if rows is None:
            return None
        scaled = preprocessor.transform(inputs[torch.from_numpy(rows)]).contiguous()
        split = Split(inputs=scaled, targets=values[torch.from_numpy(rows)])
        if cfg.sampler == "balanced":
            split.sample_weights = balanced_weights(split.targets, targets.task)
        return split

    spec = DataSpec(
        task=targets.task,
        input_shape=tuple(inputs.shape[1:]),
        input_dtype=inputs.dtype,
        num_outputs=targets.num_outputs,
        class_names=targets.class_names,
        class_counts=_class_counts(targets, indices.train),
        vocab_size=vocab_size,
        is_image=is_image,
        input_kind=raw.input_kind,
        raw_columns=raw.raw_columns,
    )
    train, val, test = (make_split(rows) for rows in (indices.train, indices.val, indices.test))
    for split in (val, test):
        if split is not None:
            split.sample_weights = None  # only training draws weighted samples
    return DataBundle(spec, train, val, test, preprocessor)


def fit_target_scaler(
    cfg: DataConfig, targets: Targets, *, train_rows: np.ndarray
) -> TargetScaler | None:
    """Regression targets' train-split statistics (``data.normalize_target``), else None:
    classification ignores the key, as there is nothing to scale in a class id."""
    if targets.task != "regression" or cfg.normalize_target == "none":
        return None
    return TargetScaler.fit(targets.values[torch.from_numpy(train_rows)])


def fit_encoder(cfg: DataConfig, raw: RawData, *, train_rows: np.ndarray) -> tuple[Any, Any]:
    """(encoder fit on the train rows or None, every sample encoded as an array)."""
    if raw.input_kind == "table":
        encoder = TableEncoder.fit(cfg.table, raw.inputs.take(train_rows))
    elif raw.input_kind == "text":
        encoder = TextEncoder.fit(cfg.text, raw.inputs.take(train_rows))
    elif raw.input_kind == "image":
        return ImageDecoder.for_arrays(raw.inputs), raw.inputs  # decoded while reading
    else:
        return None, raw.inputs
    return encoder, encoder.encode(raw.inputs)


def _apply_layout(inputs: np.ndarray, raw: RawData, layout: str) -> tuple[torch.Tensor, bool]:
    dtype = np.int64 if inputs.dtype.kind in "iu" else np.float32
    tensor = torch.from_numpy(np.ascontiguousarray(inputs, dtype=dtype))
    if layout == "flat":
        return tensor.reshape(len(tensor), -1), False
    if layout == "image" and not raw.is_image:
        raise ConfigError(
            f"data.layout: `image` needs (N, C, H, W) inputs, but {raw.origin} has inputs of "
            f"shape {tuple(tensor.shape)}; use `auto` or `flat`"
        )
    return tensor, raw.is_image


def _assign_splits(
    cfg: DataConfig,
    targets: Targets,
    raw: RawData,
    *,
    seed: int,
    provided: dict[str, np.ndarray] | None,
) -> SplitIndices:
    """Split the pool (all samples, or the provided train) into the splits not provided."""
    provided, groups = provided or {}, raw.groups
    pool = provided.get("train", np.arange(len(targets.values)))
    stratify = targets.task == "classification" and cfg.stratify
    options = {
        "val_fraction": 0.0 if "val" in provided else cfg.val_fraction,
        "test_fraction": 0.0 if "test" in provided else cfg.test_fraction,
        "seed": seed,
        "stratify_labels": targets.values.numpy()[pool] if stratify else None,
    }
    try:
        if groups is None:
            cut = split_indices(len(pool), **options)
        else:  # whole files go to one split, so no file leaks between train and test
            cut = split_groups(groups[pool], **options)
    except StratifyError as exc:
        raise _rare_class_error(raw, int(pool[exc.sample]), num_samples=len(pool)) from None

    def pick(name: str, rows: np.ndarray | None) -> np.ndarray | None:
        return provided[name] if name in provided else None if rows is None else pool[rows]

    return SplitIndices(
        train=pool[cut.train], val=pick("val", cut.val), test=pick("test", cut.test)
    )


def _rare_class_error(raw: RawData, row: int, *, num_samples: int) -> DataError:
    """A label alone in its class: a rare class, or a label that is no class at all (-5 or
    1e308 among 0/1 labels): name the row either way."""
    value = np.asarray(raw.labels).reshape(len(raw.labels), -1)[row, 0]
    if isinstance(value, float | np.floating):
        text = f"{value:g}"
    else:
        text = str(value) if isinstance(value, int | np.integer) else repr(str(value)[:100])
    return DataError(
        f"{raw.locate(row)}: label {text} is the only sample of its class among the "
        f"{num_samples} samples split, and a stratified split needs at least 2 per class; if "
        "it is not a class (a typo, a code for missing), fix or drop the row, or list the "
        "classes in data.classes; if it is one, add samples of it or set data.stratify=false"
    )


def _check_train_classes(targets: Targets, indices: SplitIndices, raw: RawData) -> None:
    """A class seen in val/test but never in train cannot be learned: name its first row."""
    if targets.task != "classification":
        return
    in_train = torch.zeros(targets.num_outputs, dtype=torch.bool)
    in_train[targets.values[torch.from_numpy(indices.train)]] = True
    for name, rows in (("val", indices.val), ("test", indices.test)):
        if rows is None:
            continue
        unseen = ~in_train[targets.values[torch.from_numpy(rows)]]
        if unseen.any():
            row = int(rows[int(unseen.to(torch.int8).argmax())])
            label = targets.class_names[int(targets.values[row])]
            raise DataError(
                f"{raw.locate(row)}: label {label!r} is in the {name} split but not among the "
                "train split's classes; add samples of it or remove it"
            )


def _class_counts(targets: Targets, train_rows: np.ndarray) -> list[int] | None:
    if targets.task != "classification":
        return None
    train_ids = targets.values[torch.from_numpy(train_rows)]
    return torch.bincount(train_ids, minlength=targets.num_outputs).tolist()
