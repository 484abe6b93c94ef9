"""``build_data``: source -> targets -> split -> preprocessing fit on train -> DataBundle."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from scaletrain.config import DataConfig
from scaletrain.data.labels import Targets, encode_targets
from scaletrain.data.preprocess import Preprocessor
from scaletrain.data.registry import SOURCES, RawData, Task
from scaletrain.data.split import SplitIndices, split_groups, split_indices
from scaletrain.errors import ConfigError, DataError, UserError

_DTYPES = {"float32": torch.float32, "int64": torch.int64}


@dataclass(frozen=True)
class DataSpec:
    """What the model and the loss need to know about the data."""

    task: Task
    input_shape: tuple[int, ...]  # per sample: (1, 8, 8) image, (64,) flat, (T,) token ids
    input_dtype: torch.dtype  # float32, or int64 for token ids
    num_outputs: int  # classes, or regression targets
    class_names: list[str] | None
    class_counts: list[int] | None  # on the train split
    vocab_size: int | None = None
    is_image: bool = False
    input_kind: str = "array"  # how predict reads raw inputs: array, table, text or image
    raw_columns: list[str] | None = None  # table/text columns predict reads

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, for the run directory (the dtype by name)."""
        state = dict(self.__dict__)
        state["input_shape"] = list(self.input_shape)
        state["input_dtype"] = str(self.input_dtype).removeprefix("torch.")
        return state

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> DataSpec:
        """Inverse of ``to_dict``."""
        return cls(
            **{
                **state,
                "input_shape": tuple(state["input_shape"]),
                "input_dtype": _DTYPES[state["input_dtype"]],
            }
        )


@dataclass
class Split:
    """One split held as tensors (the fast path), or a Dataset (user data or shards)."""

    inputs: torch.Tensor | None
    targets: torch.Tensor | None
    dataset: Dataset | None = None
    # Applied by the loaders to each batch's inputs on the device (shards scale per batch).
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    # Training draws samples with replacement in proportion to these (data.sampler).
    sample_weights: torch.Tensor | None = None
    # (inputs, targets) -> (inputs, targets) on each training micro batch: the train split only.
    augment: Callable[[torch.Tensor, torch.Tensor], tuple] | None = None

    def __len__(self) -> int:
        return len(self.inputs) if self.inputs is not None else len(self.dataset)


@dataclass
class DataBundle:
    spec: DataSpec
    train: Split
    val: Split | None
    test: Split | None
    preprocessor: Preprocessor


def build_data(cfg: DataConfig, *, seed: int, user_data: Any = None) -> DataBundle:
    """Read, split and preprocess the data named by ``cfg`` (or given to the Python API).

    Args:
        cfg: the ``data`` config section.
        seed: seeds the train/val/test split.
        user_data: ``{"train": Dataset | (inputs, targets), "val": ..., "test": ...}`` from
            the Python API; it replaces ``cfg.source``. Missing val/test are split off train.
    """
    bundle = _build_bundle(cfg, seed=seed, user_data=user_data)
    if any(cfg.augment.model_dump().values()):
        from scaletrain.data.augment import build_augmentation  # kornia: only when used

        bundle.train.augment = build_augmentation(
            cfg.augment, spec=bundle.spec, preprocessor=bundle.preprocessor
        )
    return bundle


def _build_bundle(cfg: DataConfig, *, seed: int, user_data: Any) -> DataBundle:
    if user_data is not None:
        # Imported here: user.py builds on the types defined above.
        from scaletrain.data.user import build_user_data

        return build_user_data(cfg, user_data, seed=seed)
    if cfg.source == "tensors":
        raise UserError(
            "data.source: `tensors` means data passed to the Python API "
            "(scaletrain.train(cfg, data={'train': (inputs, targets)})), but none was given"
        )
    read = SOURCES[cfg.source]  # filled by the source modules data/__init__.py imports
    raw = read(cfg)
    if isinstance(raw, DataBundle):
        return raw  # prepared shards come already split and fitted
    return bundle_from_raw(cfg, raw, seed=seed)


def bundle_from_raw(
    cfg: DataConfig, raw: RawData, *, seed: int, provided: dict[str, np.ndarray] | None = None
) -> DataBundle:
    """The shared pipeline; ``provided`` maps split names to fixed sample indices of ``raw``."""
    task = cfg.task if cfg.task != "auto" else (raw.task or "auto")
    if task == "language_model":
        from scaletrain.data.lm import language_model_bundle  # token windows, not samples

        return language_model_bundle(cfg, raw, seed=seed)
    targets = encode_targets(
        raw.labels,
        task=task,
        class_names=raw.class_names,
        origin=raw.origin,
        declared=cfg.classes,
        locate=raw.locate,
    )
    indices = _assign_splits(cfg, targets, seed=seed, provided=provided, groups=raw.groups)
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

    def make_split(rows: np.ndarray | None) -> Split | None:
        if rows is None:
            return None
        scaled = preprocessor.transform(inputs[torch.from_numpy(rows)]).contiguous()
        split = Split(inputs=scaled, targets=targets.values[torch.from_numpy(rows)])
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


def fit_encoder(cfg: DataConfig, raw: RawData, *, train_rows: np.ndarray) -> tuple[Any, Any]:
    """(encoder fit on the train rows or None, every sample encoded as an array)."""
    if raw.input_kind == "table":
        from scaletrain.data.table import TableEncoder

        encoder = TableEncoder.fit(cfg.table, raw.inputs.take(train_rows))
    elif raw.input_kind == "text":
        from scaletrain.data.text import TextEncoder

        encoder = TextEncoder.fit(cfg.text, raw.inputs.take(train_rows))
    elif raw.input_kind == "image":
        from scaletrain.data.images import ImageDecoder

        return ImageDecoder.for_arrays(raw.inputs), raw.inputs  # decoded while reading
    else:
        return None, raw.inputs
    return encoder, encoder.encode(raw.inputs)


def balanced_weights(targets: torch.Tensor, task: str) -> torch.Tensor:
    """Per-sample weights 1 / (count of its class): every class drawn equally often."""
    if task != "classification":
        raise ConfigError("data.sampler: `balanced` needs a classification task")
    counts = torch.bincount(targets).to(torch.float64)
    return 1.0 / counts[targets]


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
    *,
    seed: int,
    provided: dict[str, np.ndarray] | None,
    groups: np.ndarray | None = None,
) -> SplitIndices:
    """Split the pool (all samples, or the provided train) into the splits not provided."""
    provided = provided or {}
    pool = provided.get("train", np.arange(len(targets.values)))
    stratify = targets.task == "classification" and cfg.stratify
    options = {
        "val_fraction": 0.0 if "val" in provided else cfg.val_fraction,
        "test_fraction": 0.0 if "test" in provided else cfg.test_fraction,
        "seed": seed,
        "stratify_labels": targets.values.numpy()[pool] if stratify else None,
    }
    if groups is None:
        cut = split_indices(len(pool), **options)
    else:  # whole files go to one split, so no file leaks between train and test
        cut = split_groups(groups[pool], **options)

    def pick(name: str, rows: np.ndarray | None) -> np.ndarray | None:
        return provided[name] if name in provided else None if rows is None else pool[rows]

    return SplitIndices(
        train=pool[cut.train], val=pick("val", cut.val), test=pick("test", cut.test)
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
