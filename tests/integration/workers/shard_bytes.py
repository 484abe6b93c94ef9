"""Worker: bytes of parameters and optimizer state each rank holds under ddp and fsdp.

Usage: shard_bytes.py OUT_JSON. Every rank writes OUT_JSON.rank<R>.
"""

import json
import sys

import torch
from torch.distributed.tensor import DTensor

from scaletrain.config import MLPConfig, ParallelConfig
from scaletrain.models import build_model
from scaletrain.parallel import build_strategy


def local_bytes(tensor: torch.Tensor) -> int:
    """Bytes this rank stores: a DTensor's local shard, else the whole tensor."""
    local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
    return local.numel() * local.element_size()


def measure(strategy_name: str, **settings) -> dict:
    cfg = ParallelConfig(strategy=strategy_name, **settings)
    strategy = build_strategy(cfg, device_name="cpu")
    strategy.setup()
    try:
        torch.manual_seed(0)
        model = build_model(MLPConfig(hidden=[256, 256, 256]), input_shape=(64,), num_outputs=10)
        model = strategy.wrap_model(model)
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


def main() -> None:
    results = {
        "ddp": measure("ddp"),
        "fsdp_zero3": measure("fsdp"),
        "fsdp_zero2": measure("fsdp", fsdp={"reshard_after_forward": False}),
    }
    rank = results["ddp"]["rank"]
    with open(f"{sys.argv[1]}.rank{rank}", "w") as handle:
        json.dump(results, handle)


if __name__ == "__main__":
    main()
