"""Data: sources -> targets -> split -> preprocessing -> loaders with exact-resume state."""

# Source modules register themselves in SOURCES / DATASETS when imported.
import scaletrain.data.builtin
import scaletrain.data.files
import scaletrain.data.images
import scaletrain.data.parquet
import scaletrain.data.shards.source
import scaletrain.data.stdlib_text
import scaletrain.data.text_sources  # noqa: F401
from scaletrain.data.augment import build_augmentation
from scaletrain.data.bundle import DataBundle, DataSpec, Split, build_data
from scaletrain.data.inputs import InputsFile, read_inputs_file
from scaletrain.data.loader import (
    BatchLoader,
    EvalLoader,
    StepBatch,
    epoch_order,
    rank_slice,
    smallest_micro_batch,
)
from scaletrain.data.preprocess import Preprocessor
from scaletrain.data.registry import (
    DATASETS,
    SOURCES,
    RawData,
    register_dataset,
    register_source,
)

__all__ = [
    "DATASETS",
    "SOURCES",
    "BatchLoader",
    "DataBundle",
    "DataSpec",
    "EvalLoader",
    "InputsFile",
    "Preprocessor",
    "RawData",
    "Split",
    "StepBatch",
    "build_augmentation",
    "build_data",
    "epoch_order",
    "rank_slice",
    "smallest_micro_batch",
    "read_inputs_file",
    "register_dataset",
    "register_source",
]
