"""Evaluation over one split: every sample counted once across ranks, no padding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from scaletrain.data import EvalLoader, Split
from scaletrain.metrics import build_metrics


@dataclass
class EvalResult:
    loss: float
    metrics: dict
    predictions: dict[str, np.ndarray] | None  # target/pred (+ input for images), rank 0 only


@torch.no_grad()
def evaluate_split(
    model: nn.Module,
    split: Split,
    *,
    spec,
    loss_fn: nn.Module,
    precision,
    strategy,
    batch_size: int,
    keep_predictions: bool = False,
) -> EvalResult:
    """Loss and metrics over `split`; ranks read disjoint shards and reduce exact sums."""
    metrics = build_metrics(
        spec.task, num_classes=spec.num_outputs if spec.task == "classification" else None
    ).to(strategy.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=strategy.device)
    count = torch.zeros((), dtype=torch.float64, device=strategy.device)
    kept: dict[str, list] = {"target": [], "pred": [], "input": []}
    batches = EvalLoader(
        split,
        batch_size=batch_size,
        rank=strategy.rank,
        world_size=strategy.world_size,
        device=strategy.device,
    )
    # eval mode; under FSDP the whole model is gathered once, so ranks with different
    # batch counts (uneven shards) need no per-batch collectives
    with strategy.evaluation(model) as eval_model:
        for inputs, targets in batches:
            with precision.autocast():
                output = eval_model(inputs)
            output = output.float()
            loss_sum += loss_fn(output, targets).double() * len(targets)
            count += len(targets)
            metrics.update(output, targets)
            if keep_predictions:
                _keep(kept, output, targets, inputs, spec)
    totals = strategy.all_reduce_sum(torch.stack([loss_sum, count]))
    computed = metrics.compute(all_gather=strategy.all_gather if strategy.world_size > 1 else None)
    predictions = _gather_predictions(kept, strategy) if keep_predictions else None
    return EvalResult(float(totals[0] / totals[1].clamp(min=1)), computed, predictions)


def _keep(kept: dict, output, targets, inputs, spec) -> None:
    pred = output.argmax(dim=1) if spec.task == "classification" else output
    kept["target"].append(targets.cpu())
    kept["pred"].append(pred.cpu())
    if spec.is_image:
        kept["input"].append(inputs.float().cpu())


def _gather_predictions(kept: dict, strategy) -> dict[str, np.ndarray] | None:
    arrays = {}
    for key, parts in kept.items():
        if not parts:
            continue
        local = torch.cat(parts)
        pieces = strategy.all_gather(local) if strategy.world_size > 1 else [local]
        arrays[key] = torch.cat(pieces).numpy()
    return arrays if strategy.is_main else None
