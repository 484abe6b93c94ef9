"""What ``build_data`` returns: the ``DataSpec`` the model and loss read, and the splits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from scaletrain.data.raw import Task

if TYPE_CHECKING:
    from scaletrain.data.transforms.preprocess import Preprocessor

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
    # language_model: UTF-8 bytes of the split's (normalized) text per token of its stream,
    # what turns nats per token into bits per byte (comparable across tokenizers)
    bytes_per_token: float | None = None

    def __len__(self) -> int:
        return len(self.inputs) if self.inputs is not None else len(self.dataset)


@dataclass
class DataBundle:
    spec: DataSpec
    train: Split
    val: Split | None
    test: Split | None
    preprocessor: Preprocessor
