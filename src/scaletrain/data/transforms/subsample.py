"""`data.subsample`: the train-split rows a bagging member trains on, drawn from a seed."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Subset

from scaletrain.config import SubsampleConfig
from scaletrain.data.bundle import Split


def subsample_indices(num_samples: int, cfg: SubsampleConfig) -> np.ndarray:
    """Row indices into the train split: a pure function of its size and `cfg` (the seed),
    with or without replacement; sorted, so the loader's own shuffle decides the order."""
    count = max(1, round(cfg.fraction * num_samples))
    rng = np.random.default_rng(cfg.seed)
    if cfg.replacement:
        drawn = rng.integers(0, num_samples, size=count)
    else:
        drawn = rng.permutation(num_samples)[:count]
    return np.sort(drawn).astype(np.int64)


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
