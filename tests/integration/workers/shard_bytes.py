"""Worker: what each rank holds and sends under ddp and fsdp, measured on real wrappers.

Usage: shard_bytes.py OUT_JSON. Every rank writes OUT_JSON.rank<R> with
- the bytes of parameters and optimizer state this rank stores (ddp, fsdp ZeRO-3/2);
- ddp: the bucket settings DDP received, and the all-reduces each micro batch of a
  2-step accumulation launched (counted by a communication hook);
- fsdp: the dtypes of a bf16-mixed run (gathered for compute, stored, gradients) and
  which micro batch of an accumulation produced the sharded gradients.
"""

import json
import sys
from itertools import pairwise

import torch
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from scaletrain.config import MLPConfig, ParallelConfig
from scaletrain.errors import ConfigError
from scaletrain.models import MLPBlock, build_model
from scaletrain.parallel import WrapRequest, build_strategy
from scaletrain.parallel.blocks import find_blocks
from scaletrain.parallel.memory_plan import plan_memory
from scaletrain.parallel.memory_probe import measure_model


def local_bytes(tensor: torch.Tensor) -> int:
    """Bytes this rank stores: a DTensor's local shard, else the whole tensor."""
    local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
    return local.numel() * local.element_size()


def new_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(MLPConfig(hidden=[256, 256, 256]), input_shape=(64,), num_outputs=10)


def measure(strategy_name: str, **settings) -> dict:
    strategy = build_strategy(ParallelConfig(strategy=strategy_name, **settings), device_name="cpu")
    strategy.setup()
    try:
        model = strategy.wrap_model(new_model())
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        inputs = torch.randn(8, 64)
        model(inputs).square().mean().backward()
        optimizer.step()  # Adam's state exists after the first step
        params = sum(local_bytes(p) for p in model.parameters())
        states = sum(
            local_bytes(value)
            for state in optimizer.state.values()
            for value in state.values()
            if torch.is_tensor(value) and value.dim() > 0
        )
        return {"params": params, "optimizer": states, "rank": strategy.rank}
    finally:
        strategy.teardown()


def accumulate(strategy, model, after_backward, *, num_steps: int = 2) -> list[list]:
    """Steps of two micro batches as the loop runs them: forward in `no_sync`, backward after.

    Returns `after_backward()` after each micro batch, per step.
    """
    seen = []
    for _ in range(num_steps):
        for param in model.parameters():
            param.grad = None
        seen.append([])
        for index in range(2):
            with strategy.no_sync(model, enabled=index == 0):
                loss = model(torch.randn(8, 64)).square().mean()
            loss.backward()
            seen[-1].append(after_backward())
    return seen


def ddp_mechanics(**ddp_settings) -> dict:
    strategy = build_strategy(ParallelConfig(strategy="ddp", ddp=ddp_settings), device_name="cpu")
    strategy.setup()
    try:
        model = strategy.wrap_model(new_model())
        launched = []

        def counting_allreduce(state, bucket):
            launched.append(bucket.index())
            return default_hooks.allreduce_hook(state, bucket)

        model.register_comm_hook(None, counting_allreduce)  # None: the default group
        # DDP starts with one bucket and rebuilds its buckets by bucket_cap_mb after step 1
        totals = accumulate(strategy, model, lambda: len(launched))
        launched_before = [0, *(count for step in totals for count in step)]
        per_micro_batch = [b - a for a, b in pairwise(launched_before)]
        return {
            "bucket_bytes_cap": model.bucket_bytes_cap,
            "static_graph": model.static_graph,
            "gradient_as_bucket_view": model.gradient_as_bucket_view,
            "allreduces_per_micro_batch": [per_micro_batch[:2], per_micro_batch[2:]],
        }
    finally:
        strategy.teardown()


def fsdp_mechanics() -> dict:
    strategy = build_strategy(ParallelConfig(strategy="fsdp"), device_name="cpu")
    strategy.setup()
    try:
        model = new_model()
        compute = {}
        first_linear = model.blocks[0].linear
        first_linear.register_forward_hook(
            lambda module, args, output: compute.update(weight=module.weight.dtype)
        )
        model = strategy.wrap_model(
            model,
            WrapRequest(
                compute_dtype=torch.bfloat16,  # bf16-mixed
                block_types=(MLPBlock,),
            ),
        )
        with_grads = accumulate(
            strategy, model, lambda: sum(p.grad is not None for p in model.parameters())
        )
        stored = {str(p.dtype) for p in model.parameters()}
        grads = {str(p.grad.dtype) for p in model.parameters()}
        return {
            "compute_weight_dtype": str(compute["weight"]),
            "stored_dtypes": sorted(stored),
            "grad_dtypes": sorted(grads),
            "sharded_grads_per_micro_batch": with_grads[-1],
            "num_params": len(list(model.parameters())),
            "fsdp_units": [type(m).__name__ for m in model.modules() if isinstance(m, FSDPModule)],
        }
    finally:
        strategy.teardown()


def auto_choice(*, device_memory_gb: float) -> dict:
    """What `auto` wraps the model as, given this much memory per device."""
    cfg = ParallelConfig(strategy="auto", device_memory_gb=device_memory_gb)
    strategy = build_strategy(cfg, device_name="cpu")
    strategy.setup()
    try:
        model = strategy.wrap_model(
            new_model(),
            WrapRequest(block_types=(MLPBlock,), example_input=torch.empty(8, 64)),
        )
        model(torch.randn(8, 64)).square().mean().backward()  # the chosen wrapper trains
        return {"chosen": strategy.chosen.candidate().label, "type": type(model).__name__}
    except ConfigError as error:
        return {"error": str(error)}
    finally:
        strategy.teardown()


def memory_between_ddp_and_zero2_gb() -> float:
    """Room for FSDP ZeRO-2 but not for DDP, as the planner counts the model of new_model()."""
    model = new_model()
    blocks = find_blocks(model, block_types=(MLPBlock,))
    facts = measure_model(model, blocks=blocks, example_input=torch.empty(8, 64))
    estimates = plan_memory(
        facts,
        ParallelConfig(),
        world_size=2,
        local_world_size=2,
        device_type="cpu",
        optimizer_states=2,
        device_memory_bytes=None,
    ).estimates
    ddp, zero2 = estimates[0].total_bytes, estimates[1].total_bytes
    assert ddp > zero2, (ddp, zero2)
    return (ddp + zero2) / 2 / 2**30


def main() -> None:
    results = {
        "ddp": measure("ddp"),
        "fsdp_zero3": measure("fsdp"),
        "fsdp_zero2": measure("fsdp", fsdp={"reshard_after_forward": False}),
        "ddp_default_buckets": ddp_mechanics(),
        "ddp_small_buckets": ddp_mechanics(
            bucket_cap_mb=0.1, static_graph=True, gradient_as_bucket_view=False
        ),
        "fsdp_bf16": fsdp_mechanics(),
        "auto_tight": auto_choice(device_memory_gb=memory_between_ddp_and_zero2_gb()),
        "auto_too_small": auto_choice(device_memory_gb=1e-6),
    }
    rank = results["ddp"]["rank"]
    with open(f"{sys.argv[1]}.rank{rank}", "w") as handle:
        json.dump(results, handle)


if __name__ == "__main__":
    main()
