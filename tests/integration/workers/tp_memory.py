"""Worker: the planner's per-rank estimate vs the measured peak for a GPT under FSDP with and
without tensor parallelism. Usage: tp_memory.py OUT_JSON DIMS[;DIMS...] where DIMS is
`dp_shard,tp,global_batch`. Rank r writes OUT_JSON.rank<r>. Run with MALLOC_MMAP_THRESHOLD_=65536 (see
test_memory_planner.py: freed tensors return to the OS, so RSS follows live tensors)."""

import gc
import json
import sys

import torch

from scaletrain.config import GPTConfig, LossConfig, OptimConfig, ParallelConfig
from scaletrain.config.dims import DimsConfig
from scaletrain.models import MODELS, build_model
from scaletrain.optim import build_loss, build_optimizer
from scaletrain.parallel import WrapRequest, build_strategy

VOCAB, CONTEXT = 2048, 128
GPT = GPTConfig(n_layer=4, n_head=8, d_model=256)


def measure(dp_shard: int, tp: int, global_batch: int) -> dict:
    cfg = ParallelConfig(strategy="fsdp", dims=DimsConfig(dp_shard=dp_shard, tp=tp))
    strategy = build_strategy(cfg, device_name="cpu")
    strategy.setup()
    try:
        torch.manual_seed(0)
        model = build_model(
            GPT, input_shape=(CONTEXT,), num_outputs=VOCAB, vocab_size=VOCAB, task="language_model"
        )
        batch = global_batch // strategy.data_shard()[1]
        inputs = torch.randint(0, VOCAB, (batch, CONTEXT))
        targets = torch.randint(0, VOCAB, (batch, CONTEXT))
        model = strategy.wrap_model(
            model,
            WrapRequest(
                block_types=MODELS["gpt"].block_types,
                example_input=inputs,
                optimizer_states_per_param=2,
                model_name="gpt",
            ),
        )
        loss_fn = build_loss(
            LossConfig(), task="language_model", num_outputs=VOCAB, class_counts=None
        )
        optimizer = build_optimizer(OptimConfig(name="adamw", lr=1e-4), model)
        for _ in range(2):
            with strategy.loss_parallel():
                loss = loss_fn(model(inputs), targets)
                loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        report = strategy.memory_report()
        return {
            "rank": strategy.rank,
            "dp_shard": dp_shard,
            "tp": tp,
            "batch": global_batch,
            **report,
        }
    finally:
        strategy.teardown()
        gc.collect()


def main() -> None:
    out, grid = sys.argv[1], sys.argv[2].split(";")
    results = [measure(*(int(v) for v in point.split(","))) for point in grid]
    with open(f"{out}.rank{results[0]['rank']}", "w") as handle:
        json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
