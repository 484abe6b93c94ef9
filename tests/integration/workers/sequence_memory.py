"""Worker: the planner's per-rank estimate vs the measured peak for sequence models: an RNN
under single/fsdp, a GPT's pipeline stages under gpipe/1f1b.

Usage: sequence_memory.py OUT_JSON POINT[;POINT...], where POINT is `rnn,CELL,STRATEGY,BATCH`
or `pp,SCHEDULE,MICROBATCHES,BATCH`. Rank r writes OUT_JSON.rank<r>. Run with
MALLOC_MMAP_THRESHOLD_=65536 (see test_memory_planner.py: freed tensors return to the OS,
so RSS follows live tensors).
"""

import gc
import json
import sys
from types import SimpleNamespace

import torch
from torch import nn

from scaletrain.config import GPTConfig, LossConfig, OptimConfig, ParallelConfig
from scaletrain.config.models import RNNConfig
from scaletrain.models import MODELS, build_model
from scaletrain.optim import build_loss, build_optimizer
from scaletrain.parallel import SingleStrategy, WrapRequest, build_strategy

RNN_VOCAB, RNN_LENGTH = 2000, 64
RNN = {"embed_dim": 64, "hidden": 256, "layers": 2}
GPT_VOCAB, GPT_CONTEXT = 2048, 128
GPT = GPTConfig(n_layer=4, n_head=8, d_model=256, tie_weights=False)


def _train(model, strategy, inputs, targets, loss_fn) -> None:
    optimizer = build_optimizer(OptimConfig(name="adamw", lr=1e-4), model)
    for _ in range(2):
        loss_fn(model(inputs), targets).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def measure_rnn(cell: str, strategy_name: str, batch: int) -> dict:
    if strategy_name == "single":
        strategy = SingleStrategy(torch.device("cpu"))
    else:
        strategy = build_strategy(ParallelConfig(strategy=strategy_name), device_name="cpu")
    strategy.setup()
    try:
        torch.manual_seed(0)
        config = RNNConfig(cell=cell, **RNN)
        model = build_model(config, input_shape=(RNN_LENGTH,), num_outputs=4, vocab_size=RNN_VOCAB)
        # full-length sequences (no padding): the longest a micro batch can be
        inputs = torch.randint(1, RNN_VOCAB, (batch, RNN_LENGTH))
        targets = torch.randint(0, 4, (batch,))
        request = WrapRequest(
            block_types=MODELS["rnn"].block_types,
            example_input=inputs,
            optimizer_states_per_param=2,
        )
        model = strategy.wrap_model(model, request)
        _train(model, strategy, inputs, targets, nn.functional.cross_entropy)
        return {"rank": strategy.rank, **(strategy.memory_report() or {})}
    finally:
        strategy.teardown()
        gc.collect()


def main() -> None:
    out, grid = sys.argv[1], sys.argv[2].split(";")
    results = []
    for point in grid:
        kind, *rest = point.split(",")
        if kind == "rnn":
            cell, strategy_name, batch = rest
            found = measure_rnn(cell, strategy_name, int(batch))
            found |= {"model": f"rnn-{cell}", "batch": int(batch)}
        results.append({"point": point, **found})
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else None
    rank = results[-1]["rank"] if rank is None else rank
    with open(f"{out}.rank{rank}", "w") as handle:
        json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
