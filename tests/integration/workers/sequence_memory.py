"""Worker: the planner's per-rank estimate vs the measured peak for sequence models: an RNN
under single/fsdp, a GPT's pipeline stages under gpipe/1f1b.

Usage: sequence_memory.py OUT_JSON POINT[;POINT...], where POINT is `rnn,CELL,STRATEGY,BATCH`
or `pp,SCHEDULE,MICROBATCHES,BATCH` (2 ranks; 2 stages each for interleaved_1f1b), or
`ppmesh,SCHEDULE,MICROBATCHES,BATCH[,TP]` (4 ranks: 2 stages, each FSDP over dp_shard 2, or
with TP 2 tensor parallel over 2 ranks), or `model,NAME,STRATEGY,BATCH` (textcnn, resnet).
Rank r writes OUT_JSON.rank<r>. Run with
MALLOC_MMAP_THRESHOLD_=65536 (see test_memory_planner.py: freed tensors return to the OS,
so RSS follows live tensors).
"""

import gc
import json
import sys
from types import SimpleNamespace

import torch
from torch import nn

from scaletrain.config import GPTConfig, LossConfig, OptimConfig, ParallelConfig, PipelineConfig
from scaletrain.config.dims import DimsConfig
from scaletrain.config.models import ResNetConfig, RNNConfig, TextCNNConfig
from scaletrain.models import MODELS, build_model
from scaletrain.optim import build_loss, build_optimizer
from scaletrain.parallel import SingleStrategy, WrapRequest, build_strategy
from scaletrain.parallel.memory_pipeline import estimate_rank, measure_stages, pipeline_layout
from scaletrain.parallel.memory_probe import PeakTracker
from scaletrain.train.precision import Precision

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


def _started(strategy_name: str):
    if strategy_name == "single":
        strategy = SingleStrategy(torch.device("cpu"))
    else:
        strategy = build_strategy(ParallelConfig(strategy=strategy_name), device_name="cpu")
    strategy.setup()
    return strategy


def measure_rnn(cell: str, strategy_name: str, batch: int) -> dict:
    strategy = _started(strategy_name)
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


# more models for `model,NAME,STRATEGY,BATCH` points: config, input shape, token vocabulary
OTHER_MODELS = {
    "textcnn": (TextCNNConfig(), (RNN_LENGTH,), RNN_VOCAB),
    "resnet": (ResNetConfig(depth=18, width=16), (3, 32, 32), None),
}


def measure_other(name: str, strategy_name: str, batch: int) -> dict:
    strategy = _started(strategy_name)
    try:
        torch.manual_seed(0)
        config, shape, vocab = OTHER_MODELS[name]
        model = build_model(config, input_shape=shape, num_outputs=10, vocab_size=vocab)
        inputs = torch.randint(1, vocab, (batch, *shape)) if vocab else torch.randn(batch, *shape)
        request = WrapRequest(
            block_types=MODELS[name].block_types, example_input=inputs, optimizer_states_per_param=2
        )
        model = strategy.wrap_model(model, request)
        targets = torch.randint(0, 10, (batch,))
        _train(model, strategy, inputs, targets, nn.functional.cross_entropy)
        return {"rank": strategy.rank, **(strategy.memory_report() or {})}
    finally:
        strategy.teardown()
        gc.collect()


def _two_language_model_steps(strategy, local, batch: int, inputs, targets) -> None:
    """Two AdamW steps through the strategy's step runner (the pipeline's schedule)."""
    loss_fn = build_loss(
        LossConfig(), task="language_model", num_outputs=GPT_VOCAB, class_counts=None
    )
    runner = strategy.step_runner(
        local, loss_fn=loss_fn, precision=Precision.from_config("32", strategy.device)
    )
    step = SimpleNamespace(num_samples_global=batch, micro_batches=[(inputs, targets)])
    optimizer = build_optimizer(OptimConfig(name="adamw", lr=1e-4), local)
    for _ in range(2):
        runner(step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def _seeded_gpt():
    torch.manual_seed(0)
    return build_model(
        GPT,
        input_shape=(GPT_CONTEXT,),
        num_outputs=GPT_VOCAB,
        vocab_size=GPT_VOCAB,
        task="language_model",
    )


def measure_pipeline(schedule: str, microbatches: int, batch: int) -> dict:
    """One rank of a 2-stage GPT: the planner's row for this rank vs its measured peak."""
    cfg = ParallelConfig(
        strategy="pp",
        pp=PipelineConfig(
            size=2,
            schedule=schedule,
            microbatches=microbatches,
            stages_per_rank=2 if schedule == "interleaved_1f1b" else 1,
        ),
    )
    strategy = build_strategy(cfg, device_name="cpu")
    strategy.setup()
    try:
        model = _seeded_gpt()
        inputs = torch.randint(0, GPT_VOCAB, (batch, GPT_CONTEXT))
        targets = torch.randint(0, GPT_VOCAB, (batch, GPT_CONTEXT))
        layout = pipeline_layout(cfg)
        stages = measure_stages(model, layout, example_input=inputs, compute_dtype=None)
        planned = estimate_rank(stages, layout, cfg, rank=strategy.rank, optimizer_states=2)
        local = strategy.wrap_model(model, WrapRequest(block_types=MODELS["gpt"].block_types))
        tracker = PeakTracker(strategy.device)
        tracker.start(already_counted_bytes=sum(p.numel() * 4 for p in local.parameters()))
        _two_language_model_steps(strategy, local, batch, inputs, targets)
        return {
            "rank": strategy.rank,
            "strategy": planned.strategy,
            "estimate_mb": round(planned.total_bytes / 2**20, 2),
            "estimate": planned.breakdown_mb(),
            "measured_peak_mb": round(tracker.peak_mb(), 2),
        }
    finally:
        strategy.teardown()
        gc.collect()


def measure_pipeline_mesh(schedule: str, microbatches: int, batch: int, tp: int = 1) -> dict:
    """One rank of a 2-stage GPT whose stages FSDP shards over 2 ranks (or `tp` splits):
    the run's own estimate (the strategy plans when wrapping, as in training) vs its peak."""
    cfg = ParallelConfig(
        strategy="fsdp",
        dims=DimsConfig(pp=2, dp_shard=4 // (2 * tp), tp=tp),
        pp=PipelineConfig(schedule=schedule, microbatches=microbatches),
    )
    strategy = build_strategy(cfg, device_name="cpu")
    strategy.setup()
    try:
        model = _seeded_gpt()
        share = batch // strategy.data_shard()[1]  # this data-parallel rank's samples
        inputs = torch.randint(0, GPT_VOCAB, (share, GPT_CONTEXT))
        targets = torch.randint(0, GPT_VOCAB, (share, GPT_CONTEXT))
        request = WrapRequest(
            block_types=MODELS["gpt"].block_types,
            example_input=inputs,
            optimizer_states_per_param=2,
            model_name="gpt",
        )
        local = strategy.wrap_model(model, request)
        _two_language_model_steps(strategy, local, batch, inputs, targets)
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
        elif kind == "model":
            name, strategy_name, batch = rest
            found = measure_other(name, strategy_name, int(batch))
            found |= {"model": name, "batch": int(batch)}
        elif kind == "ppmesh":
            schedule, microbatches, batch, *tp = rest
            found = measure_pipeline_mesh(schedule, int(microbatches), int(batch), *map(int, tp))
            found |= {"model": "gpt", "batch": int(batch)}
        else:
            schedule, microbatches, batch = rest
            found = measure_pipeline(schedule, int(microbatches), int(batch))
            found |= {"model": "gpt", "batch": int(batch)}
        results.append({"point": point, **found})
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else None
    rank = results[-1]["rank"] if rank is None else rank
    with open(f"{out}.rank{rank}", "w") as handle:
        json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
