"""Data: sources -> targets -> split -> preprocessing -> loaders with exact-resume state."""

# Source modules register themselves in SOURCES / DATASETS when imported.
import scaletrain.data.shards.source
import scaletrain.data.sources.builtin
import scaletrain.data.sources.files
import scaletrain.data.sources.image_folder
import scaletrain.data.sources.parquet
import scaletrain.data.sources.stdlib_text
import scaletrain.data.sources.text_files  # noqa: F401
from scaletrain.data.build import build_data
from scaletrain.data.bundle import DataBundle, DataSpec, Split
from scaletrain.data.inputs import read_inputs_file
from scaletrain.data.loaders.loader import (
    BatchLoader,
    EvalLoader,
    StepBatch,
    epoch_order,
    rank_slice,
    smallest_micro_batch,
)
from scaletrain.data.raw import InputsFile, RawData
from scaletrain.data.sources.registry import (
    DATASETS,
    SOURCES,
    register_dataset,
    register_source,
)
from scaletrain.data.transforms.augment import build_augmentation
from scaletrain.data.transforms.preprocess import Preprocessor

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
