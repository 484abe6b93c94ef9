"""Worker: evaluate one model on an uneven eval split under ddp and fsdp; rank 0 writes JSON.

Usage: evaluate_uneven.py OUT_JSON NUM_SAMPLES BATCH_SIZE
"""

import json
import sys

import torch

from scaletrain.config import DataConfig, LossConfig, MLPConfig, ParallelConfig
from scaletrain.data import Split, build_data
from scaletrain.models import build_model
from scaletrain.optim import build_loss
from scaletrain.parallel import build_strategy
from scaletrain.train.evaluate import evaluate_split
from scaletrain.train.precision import Precision


def evaluate(strategy_name: str, *, num_samples: int, batch_size: int) -> dict:
    """Every rank builds the same model (same seed) and reads its shard of the split."""
    strategy = build_strategy(ParallelConfig(strategy=strategy_name), device_name="cpu")
    strategy.setup()
    try:
        bundle = build_data(DataConfig(name="digits", val_fraction=0.3), seed=0)
        split = Split(bundle.val.inputs[:num_samples], bundle.val.targets[:num_samples])
        torch.manual_seed(0)
        spec = bundle.spec
        model = build_model(
            MLPConfig(hidden=[16]), input_shape=spec.input_shape, num_outputs=spec.num_outputs
        )
        model = strategy.wrap_model(model)
        loss_fn = build_loss(
            LossConfig(),
            task=spec.task,
            num_outputs=spec.num_outputs,
            class_counts=spec.class_counts,
        )
        result = evaluate_split(
            model,
            split,
            spec=spec,
            loss_fn=loss_fn,
            strategy=strategy,
            batch_size=batch_size,
            precision=Precision.from_config("32", strategy.device),
            keep_predictions=True,
        )
        predictions = {k: v.tolist() for k, v in (result.predictions or {}).items() if k != "input"}
        return {"loss": result.loss, "metrics": result.metrics, "predictions": predictions}
    finally:
        strategy.teardown()


def main() -> None:
    out, num_samples, batch_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    names = sys.argv[4:] or ["ddp", "fsdp"]
    results = {
        name: evaluate(name, num_samples=num_samples, batch_size=batch_size) for name in names
    }
    if torch.distributed.is_available() and int(__import__("os").environ.get("RANK", 0)) == 0:
        with open(out, "w") as handle:
            json.dump(results, handle)


if __name__ == "__main__":
    main()
