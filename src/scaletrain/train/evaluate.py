"""Evaluation over one split: every sample counted once across ranks, no padding."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from scaletrain.data import EvalLoader, Split
from scaletrain.metrics import build_metrics
from scaletrain.metrics.language import bits_per_byte


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
    inverse_target: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> EvalResult:
    """Loss and metrics over `split`; ranks read disjoint shards and reduce exact sums.

    The loss is the training loss (on standardized regression targets where
    `data.normalize_target` scaled them); metrics and kept predictions are in the targets'
    original units (`inverse_target`: `Preprocessor.inverse_target`).
    """
    metrics = build_metrics(
        spec.task, num_classes=spec.num_outputs if spec.task == "classification" else None
    ).to(strategy.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=strategy.device)
    count = torch.zeros((), dtype=torch.float64, device=strategy.device)
    kept: dict[str, list] = {"target": [], "pred": [], "input": []}
    rank, world_size = strategy.eval_shard()
    batches = EvalLoader(
        split, batch_size=batch_size, rank=rank, world_size=world_size, device=strategy.device
    )
    # eval mode; under FSDP the whole model is gathered once, so ranks with different
    # batch counts (uneven shards) need no per-batch collectives
    with strategy.evaluation(model) as eval_model:
        for inputs, targets in batches:
            with precision.autocast():
                output = eval_model(precision.cast_inputs(inputs))
            if output is None:  # a pipeline stage before the last: the last one scores
                continue
            output = output.float()
            loss_sum += loss_fn(output, targets).double() * len(targets)
            count += len(targets)
            if inverse_target is not None and spec.task == "regression":
                output, targets = inverse_target(output), inverse_target(targets)
            metrics.update(output, targets)
            if keep_predictions:
                _keep(kept, output, targets, inputs, spec)
    totals = strategy.all_reduce_sum(torch.stack([loss_sum, count]))
    computed = metrics.compute(all_gather=strategy.all_gather if world_size > 1 else None)
    if split.bytes_per_token and "cross_entropy" in computed:
        computed["bits_per_byte"] = bits_per_byte(computed["cross_entropy"], split.bytes_per_token)
    predictions = (
        _gather_predictions(kept, strategy, rank, world_size) if keep_predictions else None
    )
    result = EvalResult(float(totals[0] / totals[1].clamp(min=1)), computed, predictions)
    return strategy.share_eval(result)


def _keep(kept: dict, output, targets, inputs, spec) -> None:
    pred = output
    if spec.task in ("classification", "language_model"):  # LM: token ids, never (B, T, V)
        pred = output.argmax(dim=-1)
    kept["target"].append(targets.cpu())
    kept["pred"].append(pred.cpu())
    if spec.is_image:
        kept["input"].append(inputs.float().cpu())


def _gather_predictions(
    kept: dict, strategy, rank: int, world_size: int
) -> dict[str, np.ndarray] | None:
    """On the first evaluating rank (a pipeline's last stage hands them on to rank 0), or
    where each rank evaluated the whole split (`world_size` 1): the split's predictions."""
    arrays = {}
    for key, parts in kept.items():
        if not parts:
            continue
        local = torch.cat(parts)
        pieces = strategy.all_gather(local) if world_size > 1 else [local]
        arrays[key] = torch.cat(pieces).numpy()
    return arrays if strategy.is_main or rank == 0 or world_size == 1 else None


@dataclass(frozen=True)
class Validation:
    result: EvalResult
    improved: bool  # the best value of train.monitor so far
    stop: bool  # train.early_stopping's patience ran out


class Evaluator:
    """Validation during training: when it is due, the monitored metric, early stopping."""

    def __init__(
        self,
        every_steps: int | None,
        *,
        data,
        loss_fn: nn.Module,
        precision,
        strategy,
        batch_size: int,
        monitor,
        log,
    ):
        self.every_steps = every_steps
        self.data, self.loss_fn, self.precision = data, loss_fn, precision
        self.strategy, self.batch_size = strategy, batch_size
        self.monitor, self.log = monitor, log
        # (step, result) of the latest validation and of the best one: the final evaluation
        # reuses them instead of evaluating the same weights on val again (LoopResult.validated)
        self.latest: tuple[int, EvalResult] | None = None
        self.best: tuple[int, EvalResult] | None = None

    def due(self, step: int, *, epoch_end: bool, last: bool) -> bool:
        """Every `train.eval_every_steps`, else at each epoch's end; and after the last step,
        so the final weights are validated (and can be the best) too."""
        if self.data.val is None:
            return False
        regular = step % self.every_steps == 0 if self.every_steps else epoch_end
        return regular or last

    def validate(self, model: nn.Module, state) -> Validation:
        """Evaluate on val, log it, and update the monitor's best step and patience."""
        result = evaluate_split(
            model,
            self.data.val,
            spec=self.data.spec,
            loss_fn=self.loss_fn,
            precision=self.precision,
            strategy=self.strategy,
            batch_size=self.batch_size,
            inverse_target=self.data.preprocessor.inverse_target,
        )
        record = {"split": "val", "step": state.step, "epoch": state.epoch}
        self.log({**record, "loss": result.loss, "metrics": result.metrics})
        improved = self.monitor.observe(result)
        self.latest = (state.step, result)
        if improved:
            self.best = self.latest
        stop = self.monitor.should_stop()
        if stop:
            self.log({"event": "early_stop", "step": state.step, "detail": self.monitor.describe()})
        return Validation(result, improved, stop)
