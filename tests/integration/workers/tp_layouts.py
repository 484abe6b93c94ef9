"""Worker: train the contract GPT for a few steps under one mesh layout; rank 0 prints the
losses as JSON. Usage: tp_layouts.py DP_SHARD TP STEPS"""

import json
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from contract_gpt import GPT
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor.parallel import loss_parallel

from scaletrain.config.dims import DimsConfig
from scaletrain.parallel.mesh import build_device_mesh, data_parallel_mesh, resolve_dims
from scaletrain.parallel.tensor_parallel import apply_tensor_parallel


def main() -> None:
    dp_shard, tp, steps = (int(value) for value in sys.argv[1:4])
    dist.init_process_group("gloo")
    dims = resolve_dims(
        DimsConfig(dp_shard=dp_shard, tp=tp), world_size=dist.get_world_size(), rank=dist.get_rank()
    )
    mesh = build_device_mesh(dims, "cpu")
    torch.manual_seed(0)
    model = GPT()
    if dims.tp_enabled:
        apply_tensor_parallel(model, mesh["tp"], model_name="gpt")
    for block in model.blocks:
        fully_shard(block, mesh=data_parallel_mesh(mesh, dims))
    fully_shard(model, mesh=data_parallel_mesh(mesh, dims))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        tokens = torch.randint(0, 48, (8, 17), generator=generator)
        local = tokens.chunk(dims.dp_size)[dims.dp_rank]
        with loss_parallel():
            logits = model(local[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1), local[:, 1:].flatten())
            loss.backward()
        value = loss.full_tensor() if hasattr(loss, "full_tensor") else loss
        total = value.detach().clone()
        dist.all_reduce(total)
        losses.append(total.item() / dist.get_world_size())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    if dist.get_rank() == 0:
        print("LOSSES " + json.dumps(losses))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
