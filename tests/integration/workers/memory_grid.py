"""Worker: planner estimate vs measured peak memory per rank, over a small grid.

Usage: memory_grid.py OUT_JSON STRATEGY[,STRATEGY] [DEVICE]. Rank r writes OUT_JSON.rank<r>.
Run with MALLOC_MMAP_THRESHOLD_=65536 so freed tensors go back to the OS and the
peak RSS of each grid point (reset between points) is that point's own.
"""

import gc
import json
import sys

import torch
from torch import nn

from scaletrain.config import CNNConfig, MLPConfig, OptimConfig, ParallelConfig
from scaletrain.models import MODELS, build_model
from scaletrain.optim import build_optimizer
from scaletrain.parallel import WrapRequest, build_strategy

MODELS_TO_TRY = {
    "mlp": (MLPConfig(hidden=[1024, 1024, 1024, 1024]), (256,)),
    "cnn": (CNNConfig(channels=[32, 64], head=[256], batch_norm=True), (3, 32, 32)),
}
BATCH_SIZES = (64, 512)
NUM_STEPS = 2


def measure(strategy_name: str, model_name: str, batch_size: int, device: str) -> dict:
    strategy = build_strategy(ParallelConfig(strategy=strategy_name), device_name=device)
    strategy.setup()
    try:
        config, input_shape = MODELS_TO_TRY[model_name]
        torch.manual_seed(0)
        model = build_model(config, input_shape=input_shape, num_outputs=10)
        inputs = torch.randn(batch_size, *input_shape, device=strategy.device)
        targets = torch.randint(0, 10, (batch_size,), device=strategy.device)
        model = strategy.wrap_model(
            model,
            WrapRequest(
                block_types=MODELS[model_name].block_types,
                example_input=inputs,
                optimizer_states_per_param=2,
            ),
        )
        optimizer = build_optimizer(OptimConfig(name="adamw", lr=1e-4), model)  # fused
        for _ in range(NUM_STEPS):
            loss = nn.functional.cross_entropy(model(inputs), targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        report = strategy.memory_report() or {}
        return {"rank": strategy.rank, **report}
    finally:
        strategy.teardown()
        gc.collect()


def main() -> None:
    out, strategies = sys.argv[1], sys.argv[2].split(",")
    device = sys.argv[3] if len(sys.argv) > 3 else "cpu"
    results = []
    for strategy_name in strategies:
        for model_name in MODELS_TO_TRY:
            for batch_size in BATCH_SIZES:
                point = measure(strategy_name, model_name, batch_size, device)
                results.append({"model": model_name, "batch_size": batch_size, **point})
    with open(f"{out}.rank{results[0]['rank']}", "w") as handle:
        json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
