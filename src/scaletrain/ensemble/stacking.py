"""Stacking: the combiner learns from the members' predictions on the train-split rows that
no member trained on (`ensemble.combiner_fraction`, the same rows for every member), so it
never sees a member's in-sample prediction.

Cost: nothing beyond the K members (no extra fold models), but each member trains on
1 - combiner_fraction of the train split. Full K-fold cross-fitting (every train row
predicted out-of-fold by every member) would cost K x (K - 1) extra fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from scaletrain.config import Config
from scaletrain.data import DataBundle
from scaletrain.data.transforms.subsample import holdout_indices
from scaletrain.fileio import atomic_path
from scaletrain.trained.combiner import COMBINER_FILE, build_combiner, stack_features

NUM_STEPS = 300  # full-batch steps: the held-out rows are few, the combiner is tiny
LEARNING_RATE = 0.01
# linear: L2 pull towards the plain mean, so a few hundred rows cannot overfit K * C^2 weights
PULL_TO_MEAN = 1e-2
WEIGHT_DECAY = 1e-3  # mlp


@dataclass(frozen=True)
class StackingFit:
    rows: list[int]  # train-split rows the combiner learned from
    loss: float  # its final training loss on them


def combiner_rows(num_train: int, cfg: Config) -> np.ndarray:
    """The train-split rows every member of `cfg`'s ensemble left out (data.subsample.holdout)."""
    seed = cfg.run.seed if cfg.data.split_seed is None else cfg.data.split_seed
    return holdout_indices(num_train, cfg.ensemble.combiner_fraction, seed=seed)


def fit_combiner(
    members: list[nn.Module], cfg: Config, bundle: DataBundle, *, out: Path
) -> StackingFit:
    """Train the combiner on the members' held-out predictions and save it to `out`."""
    from safetensors.torch import save_file

    rows = combiner_rows(len(bundle.train), cfg)
    index = torch.from_numpy(rows)
    inputs, targets = bundle.train.inputs[index], bundle.train.targets[index]
    if bundle.train.transform is not None:
        inputs = bundle.train.transform(inputs)
    features = member_features(members, inputs, task=bundle.spec.task)
    torch.manual_seed(cfg.run.seed)  # the mlp's initial weights
    combiner = build_combiner(
        cfg.ensemble.combiner, num_members=len(members), num_outputs=bundle.spec.num_outputs
    )
    loss = _train(combiner, features, targets, task=bundle.spec.task, kind=cfg.ensemble.combiner)
    state = {name: value.detach().contiguous() for name, value in combiner.state_dict().items()}
    with atomic_path(out / COMBINER_FILE) as temporary:
        save_file(state, str(temporary))
    return StackingFit(rows.tolist(), loss)


@torch.no_grad()
def member_features(members: list[nn.Module], inputs: torch.Tensor, *, task: str):
    """The combiner's input for `inputs`, as `EnsembleModule` computes it (eval mode, fp32)."""
    for member in members:
        member.eval()
    outputs = torch.stack([member(inputs).float() for member in members])  # (K, B, C)
    return stack_features(outputs, task=task)


def _train(combiner: nn.Module, features, targets, *, task: str, kind: str) -> float:
    """Full-batch Adam, a fixed number of steps: deterministic for a given seed."""
    optimizer = torch.optim.Adam(
        combiner.parameters(),
        lr=LEARNING_RATE,
        weight_decay=0 if kind == "linear" else WEIGHT_DECAY,
    )
    anchor = combiner.weight.detach().clone() if kind == "linear" else None
    loss = torch.tensor(0.0)
    for _ in range(NUM_STEPS):
        optimizer.zero_grad()
        outputs = combiner(features)
        if task == "classification":
            loss = nn.functional.cross_entropy(outputs, targets.long())
        else:
            loss = nn.functional.mse_loss(outputs, targets.float().reshape(outputs.shape))
        if anchor is not None:
            loss = loss + PULL_TO_MEAN * (combiner.weight - anchor).square().sum()
        loss.backward()
        optimizer.step()
    combiner.eval()
    return float(loss.detach())
