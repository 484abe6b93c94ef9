"""Built-in datasets: scikit-learn's bundled tables, read from disk (no download)."""

from __future__ import annotations

import difflib

import numpy as np

from scaletrain.config import DataConfig
from scaletrain.data.raw import RawData
from scaletrain.data.sources.registry import DATASETS, register_dataset, register_source
from scaletrain.errors import ConfigError


@register_source("builtin")
def read_builtin(cfg: DataConfig) -> RawData:
    """Load the built-in dataset named by ``data.name``."""
    reader = DATASETS.get(cfg.name)
    if reader is None:
        names = sorted(DATASETS)
        close = difflib.get_close_matches(cfg.name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"data.name: unknown dataset {cfg.name!r}{hint} (available: {', '.join(names)})"
        )
    return reader()


@register_dataset("digits")
def load_digits() -> RawData:
    """8x8 grey images of handwritten digits (1797 samples, 10 classes, values 0..16)."""
    bunch = _sklearn_datasets().load_digits()
    images = bunch.images.astype(np.float32)[:, None]  # (N, 1, 8, 8)
    return RawData(
        inputs=images,
        labels=bunch.target.astype(np.int64),
        origin="builtin dataset 'digits'",
        is_image=True,
        task="classification",
        class_names=[str(name) for name in bunch.target_names],
    )


def _table(name: str, bunch, *, task: str) -> RawData:
    class_names = None
    if task == "classification":
        class_names = [str(name) for name in bunch.target_names]
    return RawData(
        inputs=bunch.data.astype(np.float32),
        labels=bunch.target,
        origin=f"builtin dataset {name!r}",
        task=task,
        class_names=class_names,
    )


@register_dataset("iris")
def load_iris() -> RawData:
    """Iris flowers: 150 samples, 4 features, 3 classes."""
    return _table("iris", _sklearn_datasets().load_iris(), task="classification")


@register_dataset("wine")
def load_wine() -> RawData:
    """Wine cultivars: 178 samples, 13 features, 3 classes."""
    return _table("wine", _sklearn_datasets().load_wine(), task="classification")


@register_dataset("breast_cancer")
def load_breast_cancer() -> RawData:
    """Breast cancer diagnosis: 569 samples, 30 features, 2 classes."""
    return _table("breast_cancer", _sklearn_datasets().load_breast_cancer(), task="classification")


@register_dataset("diabetes")
def load_diabetes() -> RawData:
    """Diabetes progression: 442 samples, 10 raw (unscaled) features, 1 regression target."""
    bunch = _sklearn_datasets().load_diabetes(scaled=False)
    return _table("diabetes", bunch, task="regression")


def _sklearn_datasets():
    """Imported on first use: scikit-learn costs a second at every CLI start otherwise."""
    from sklearn import datasets

    return datasets
