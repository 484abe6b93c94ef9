"""Data: sources -> targets -> split -> preprocessing -> loaders with exact-resume state."""

from scaletrain.data.bundle import DataBundle, DataSpec, Split, build_data
from scaletrain.data.files import read_inputs_file
from scaletrain.data.loader import BatchLoader, EvalLoader, StepBatch, epoch_order, rank_slice
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
    "Preprocessor",
    "RawData",
    "Split",
    "StepBatch",
    "build_data",
    "epoch_order",
    "rank_slice",
    "read_inputs_file",
    "register_dataset",
    "register_source",
]
