"""The final evaluation: the weights a run returns (the best, else the last) on val and test.

Val is evaluated once per set of weights: the validation that training ran after the best
and the last step is reused where this process kept it (`LoopResult.validated`), so only
test costs a pass, and test is evaluated for the returned weights alone (looking at the test
score of several checkpoints would be choosing on test). Predictions are kept for the report:
of test, else of val.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from scaletrain.checkpoint import CheckpointStore
from scaletrain.data import DataBundle
from scaletrain.rundir import RunDir
from scaletrain.train.evaluate import evaluate_split
from scaletrain.train.loop import LoopResult

EVAL_BATCH_SIZE = 256


@dataclass(frozen=True)
class FinalMetrics:
    metrics: dict  # split -> metrics of the returned weights
    weights: dict | None  # {"name": "best" | "last", "step": N}
    metrics_last: dict | None  # the last weights' val metrics, where the best are older


NO_METRICS = FinalMetrics({}, None, None)


def final_evaluation(result: LoopResult, bundle: DataBundle, run: RunDir, strategy) -> FinalMetrics:
    """Metrics of the best weights (else the last), loaded into the trained model; where
    the best are older than the last, the last weights' val metrics beside them."""
    strategy.evaluation_barrier()  # rank 0 may still be writing best.json
    best = CheckpointStore(run.checkpoints).best_step()
    last = result.state.step
    if best is None or best == last:
        metrics = _evaluate_splits(result, bundle, run, strategy, step=last)
        return FinalMetrics(metrics, {"name": "last", "step": last}, None)
    metrics_last = _val_metrics(result, bundle, strategy, step=last)
    _load_best(result, run, strategy, best)
    metrics = _evaluate_splits(result, bundle, run, strategy, step=best)
    return FinalMetrics(metrics, {"name": "best", "step": best}, metrics_last)


def _evaluate_splits(
    result: LoopResult, bundle: DataBundle, run: RunDir, strategy, *, step: int
) -> dict:
    """Val (reused where validated) and test of the model's weights, those after `step`."""
    metrics = {}
    for name in ("val", "test"):
        split = getattr(bundle, name)
        if split is None:
            continue
        keep = name == "test" or bundle.test is None  # the report's predictions
        reused = None if keep else result.validated.get(step)
        evaluated = reused or _evaluate(result, bundle, split, strategy, keep=keep)
        metrics[name] = {"loss": evaluated.loss, **evaluated.metrics}
        if strategy.is_main and evaluated.predictions:
            run.predictions.mkdir(exist_ok=True)
            np.savez_compressed(run.predictions / f"{name}.npz", **evaluated.predictions)
    return metrics


def _val_metrics(result: LoopResult, bundle: DataBundle, strategy, *, step: int) -> dict | None:
    if bundle.val is None:
        return None
    evaluated = result.validated.get(step) or _evaluate(
        result, bundle, bundle.val, strategy, keep=False
    )
    return {"val": {"loss": evaluated.loss, **evaluated.metrics}}


def _evaluate(result: LoopResult, bundle: DataBundle, split, strategy, *, keep: bool):
    return evaluate_split(
        result.state.model,
        split,
        spec=bundle.spec,
        loss_fn=result.loss_fn,
        precision=result.precision,
        strategy=strategy,
        batch_size=EVAL_BATCH_SIZE,
        keep_predictions=keep,
        inverse_target=bundle.preprocessor.inverse_target,
    )


def _load_best(result: LoopResult, run: RunDir, strategy, best: int) -> None:
    """The best weights into the trained model: from the copy one process kept of what it
    wrote (the same bits), else read back from the checkpoint."""
    from scaletrain.checkpoint.state_dict import load_model_state  # DCP: imported when used

    kept = result.best_in_memory
    if kept is not None and kept[0] == best:
        load_model_state(result.state.model, kept[1])
        return
    load_weights(result.state.model, CheckpointStore(run.checkpoints).find("best"), strategy)


def load_weights(model: nn.Module, path: Path, strategy) -> None:
    """A checkpoint's model weights into `model` (this rank's part)."""
    from scaletrain.checkpoint.state_dict import load_model_state, model_state

    tensors = {"model": model_state(model)}
    CheckpointStore(path.parent).load(path, tensors=tensors, rank=strategy.rank)
    load_model_state(model, tensors["model"])
