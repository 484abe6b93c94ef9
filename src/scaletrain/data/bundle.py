"""``build_data``: source -> targets -> split -> preprocessing fit on train -> DataBundle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

import scaletrain.data.builtin
import scaletrain.data.files  # noqa: F401  (both fill SOURCES)
from scaletrain.config import DataConfig
from scaletrain.data.labels import Targets, encode_targets
from scaletrain.data.preprocess import Preprocessor
from scaletrain.data.registry import SOURCES, RawData, Task
from scaletrain.data.split import SplitIndices, split_indices
from scaletrain.errors import ConfigError, UserError

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
    """One split held as tensors (the fast path) or as a user Dataset used as-is."""

    inputs: torch.Tensor | None
    targets: torch.Tensor | None
    dataset: Dataset | None = None

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
    if user_data is not None:
        # Imported here: user.py builds on the types defined above.
        from scaletrain.data.user import build_user_data

        return build_user_data(cfg, user_data, seed=seed)
    if cfg.source == "tensors":
        raise UserError(
            "data.source: `tensors` means data passed to the Python API "
            "(scaletrain.train(cfg, data={'train': (inputs, targets)})), but none was given"
        )
    return bundle_from_raw(cfg, SOURCES[cfg.source](cfg), seed=seed)


def bundle_from_raw(
    cfg: DataConfig, raw: RawData, *, seed: int, provided: dict[str, np.ndarray] | None = None
) -> DataBundle:
    """The shared pipeline; ``provided`` maps split names to fixed sample indices of ``raw``."""
    inputs, is_image = _apply_layout(raw, cfg.layout)
    task = cfg.task if cfg.task != "auto" else (raw.task or "auto")
    targets = encode_targets(raw.labels, task=task, class_names=raw.class_names, origin=raw.origin)
    indices = _assign_splits(cfg, targets, seed=seed, provided=provided)
    method = cfg.normalize if raw.vocab_size is None else "none"  # token ids stay ids
    train_inputs = inputs[indices.train]
    preprocessor = Preprocessor.fit(method, train_inputs, is_image=is_image)

    def make_split(rows: np.ndarray | None) -> Split | None:
        if rows is None:
            return None
        scaled = preprocessor.transform(inputs[torch.from_numpy(rows)]).contiguous()
        return Split(inputs=scaled, targets=targets.values[torch.from_numpy(rows)])

    spec = DataSpec(
        task=targets.task,
        input_shape=tuple(inputs.shape[1:]),
        input_dtype=inputs.dtype,
        num_outputs=targets.num_outputs,
        class_names=targets.class_names,
        class_counts=_class_counts(targets, indices.train),
        vocab_size=raw.vocab_size,
        is_image=is_image,
    )
    train, val, test = (make_split(rows) for rows in (indices.train, indices.val, indices.test))
    return DataBundle(spec, train, val, test, preprocessor)


def _apply_layout(raw: RawData, layout: str) -> tuple[torch.Tensor, bool]:
    dtype = np.int64 if raw.vocab_size is not None else np.float32
    inputs = torch.from_numpy(np.ascontiguousarray(raw.inputs, dtype=dtype))
    if layout == "flat":
        return inputs.reshape(len(inputs), -1), False
    if layout == "image" and not raw.is_image:
        raise ConfigError(
            f"data.layout: `image` needs (N, C, H, W) inputs, but {raw.origin} has inputs of "
            f"shape {tuple(inputs.shape)}; use `auto` or `flat`"
        )
    return inputs, raw.is_image


def _assign_splits(
    cfg: DataConfig, targets: Targets, *, seed: int, provided: dict[str, np.ndarray] | None
) -> SplitIndices:
    """Split the pool (all samples, or the provided train) into the splits not provided."""
    provided = provided or {}
    pool = provided.get("train", np.arange(len(targets.values)))
    stratify = targets.task == "classification" and cfg.stratify
    cut = split_indices(
        len(pool),
        val_fraction=0.0 if "val" in provided else cfg.val_fraction,
        test_fraction=0.0 if "test" in provided else cfg.test_fraction,
        seed=seed,
        stratify_labels=targets.values.numpy()[pool] if stratify else None,
    )

    def pick(name: str, rows: np.ndarray | None) -> np.ndarray | None:
        return provided[name] if name in provided else None if rows is None else pool[rows]

    return SplitIndices(
        train=pool[cut.train], val=pick("val", cut.val), test=pick("test", cut.test)
    )


def _class_counts(targets: Targets, train_rows: np.ndarray) -> list[int] | None:
    if targets.task != "classification":
        return None
    train_ids = targets.values[torch.from_numpy(train_rows)]
    return torch.bincount(train_ids, minlength=targets.num_outputs).tolist()
