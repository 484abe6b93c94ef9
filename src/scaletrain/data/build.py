"""``build_data``: the data named by the config (or given to the Python API) -> DataBundle."""

from __future__ import annotations

from typing import Any

from scaletrain.config import DataConfig
from scaletrain.data.bundle import DataBundle
from scaletrain.data.pipeline import bundle_from_raw
from scaletrain.data.sources.registry import SOURCES
from scaletrain.data.transforms.augment import build_augmentation
from scaletrain.data.transforms.residuals import with_residual_targets
from scaletrain.data.transforms.subsample import check_weighted_task, subsample_split
from scaletrain.data.user import build_user_data
from scaletrain.errors import UserError


def build_data(cfg: DataConfig, *, seed: int, user_data: Any = None) -> DataBundle:
    """Read, split and preprocess the data named by ``cfg`` (or given to the Python API).

    Args:
        cfg: the ``data`` config section.
        seed: seeds the train/val/test split.
        user_data: ``{"train": Dataset | (inputs, targets), "val": ..., "test": ...}`` from
            the Python API; it replaces ``cfg.source``. Missing val/test are split off train.
    """
    if cfg.split_seed is not None:  # an ensemble's members share its split
        seed = cfg.split_seed
    bundle = _build_bundle(cfg, seed=seed, user_data=user_data)
    if cfg.subsample is not None:  # after the preprocessing was fit on the whole train split
        if cfg.subsample.residuals_file is not None:  # a gradient-boosting round's targets
            bundle = with_residual_targets(bundle, cfg.subsample.residuals_file)
        check_weighted_task(cfg.subsample, bundle.spec.task)
        bundle.train = subsample_split(bundle.train, cfg.subsample)
    if any(cfg.augment.model_dump().values()):
        bundle.train.augment = build_augmentation(
            cfg.augment, spec=bundle.spec, preprocessor=bundle.preprocessor
        )
    return bundle


def _build_bundle(cfg: DataConfig, *, seed: int, user_data: Any) -> DataBundle:
    if user_data is not None:
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
