"""Plain-dict registries of datasets and sources, filled by decorators where each is defined.

A source reader turns the ``data`` config section into ``RawData``: every sample in memory,
labels as found in the file. Everything after (task inference, splitting, preprocessing)
is shared, so a new format (parquet, images, text shards) is one registered function.
"""

from __future__ import annotations

from collections.abc import Callable

from scaletrain.config import DataConfig
from scaletrain.data.raw import RawData

DatasetReader = Callable[[], RawData]
SourceReader = Callable[[DataConfig], RawData]

DATASETS: dict[str, DatasetReader] = {}
SOURCES: dict[str, SourceReader] = {}


def register_dataset(name: str) -> Callable[[DatasetReader], DatasetReader]:
    """Add a built-in dataset under ``name`` (its docstring is its one-line description)."""

    def decorator(reader: DatasetReader) -> DatasetReader:
        assert name not in DATASETS, f"dataset {name!r} registered twice"
        DATASETS[name] = reader
        return reader

    return decorator


def register_source(name: str) -> Callable[[SourceReader], SourceReader]:
    """Add a reader for ``data.source: name``."""

    def decorator(reader: SourceReader) -> SourceReader:
        assert name not in SOURCES, f"source {name!r} registered twice"
        SOURCES[name] = reader
        return reader

    return decorator
