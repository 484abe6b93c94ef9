"""`data.subsample`: the train-split rows a bagging member trains on, drawn from a seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from scaletrain.config import SubsampleConfig
from scaletrain.data.bundle import Split
from scaletrain.errors import ConfigError, UserError


def subsample_indices(num_samples: int, cfg: SubsampleConfig) -> np.ndarray:
    """Row indices into the train split: a pure function of its size and `cfg` (the seed),
    with or without replacement; sorted, so the loader's own shuffle decides the order."""
    if cfg.weights_use == "loss" or cfg.residuals_file is not None:
        return np.arange(num_samples, dtype=np.int64)  # boosting: every row, once, in order
    if cfg.weights_file is not None:  # a boosting round: drawn in proportion to its weights
        return weighted_draw(read_row_weights(cfg.weights_file, num_samples), seed=cfg.seed)
    pool = np.arange(num_samples)
    if cfg.holdout > 0:  # a stacking combiner's rows: no member may train on them
        pool = np.setdiff1d(pool, holdout_indices(num_samples, cfg.holdout, seed=cfg.holdout_seed))
    count = max(1, round(cfg.fraction * len(pool)))
    rng = np.random.default_rng(cfg.seed)
    if cfg.replacement:
        drawn = pool[rng.integers(0, len(pool), size=count)]
    else:
        drawn = pool[rng.permutation(len(pool))[:count]]
    return np.sort(drawn).astype(np.int64)


def check_weighted_task(cfg: SubsampleConfig, task: str) -> None:
    """`weights_use: loss` weighs a classification cross-entropy: refused for another task
    once `data.task: auto` has resolved (before any run directory exists)."""
    if cfg.weights_use == "loss" and cfg.weights_file is not None and task != "classification":
        raise ConfigError(
            "data.subsample.weights_use: `loss` weighs each row's cross-entropy, for "
            f"classification; the data is a {task} task; use `draw`"
        )


def weighted_draw(weights: np.ndarray, *, seed: int) -> np.ndarray:
    """Boosting by resampling: len(weights) rows drawn with replacement in proportion to the
    weights (sorted; the loader shuffles), a pure function of the weights and the seed."""
    weights = np.asarray(weights, dtype=np.float64)
    rng = np.random.default_rng(seed)
    drawn = rng.choice(len(weights), size=len(weights), p=weights / weights.sum())
    return np.sort(drawn).astype(np.int64)


def read_row_weights(path: str, num_samples: int) -> np.ndarray:
    """One weight >= 0 per train-split row from a .npy file (never a pickle)."""
    try:
        weights = np.load(Path(path), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"data.subsample.weights_file: cannot read {path} ({exc})") from None
    if weights.shape != (num_samples,) or not np.isfinite(weights).all() or weights.min() < 0:
        raise UserError(
            f"data.subsample.weights_file: {path} must hold {num_samples} finite weights >= 0 "
            f"(one per train-split row), got shape {weights.shape}"
        )
    if weights.sum() <= 0:
        raise UserError(f"data.subsample.weights_file: {path}: the weights sum to 0")
    return weights


def holdout_indices(num_samples: int, fraction: float, *, seed: int) -> np.ndarray:
    """The train-split rows left out of every member (sorted): a pure function of the split
    size, the share and the seed, so the ensemble finds the same rows its members skipped."""
    count = min(num_samples - 1, max(1, round(fraction * num_samples)))
    return np.sort(np.random.default_rng(seed).permutation(num_samples)[:count]).astype(np.int64)


def subsample_split(split: Split, cfg: SubsampleConfig) -> Split:
    """The train split restricted to (and repeating, with replacement) the drawn rows."""
    rows = subsample_indices(len(split), cfg)
    index = torch.from_numpy(rows)
    weights = split.sample_weights[index] if split.sample_weights is not None else None
    if split.inputs is not None:
        return Split(
            split.inputs[index],
            split.targets[index],
            transform=split.transform,
            sample_weights=weights,
            augment=split.augment,
            bytes_per_token=split.bytes_per_token,
        )
    return Split(
        None,
        None,
        dataset=Subset(split.dataset, rows.tolist()),
        transform=split.transform,
        sample_weights=weights,
        augment=split.augment,
        bytes_per_token=split.bytes_per_token,
    )
