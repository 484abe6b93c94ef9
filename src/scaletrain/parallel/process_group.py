"""Start and stop the default process group: nccl on CUDA, gloo on CPU."""

from __future__ import annotations

import itertools
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from scaletrain.parallel.env import LaunchEnv

# Several runs in one process (tune, ensembles) re-create the group on torchrun's store,
# which outlives them: a fresh key prefix per group keeps a fast rank from reading the
# previous group's (dead) addresses. Every rank creates groups in the same order. Workers
# that torchrun's agent restarts after a failure meet on the same store too: the restart
# count and the world size (an elastic job changes it) are in the prefix, or they would
# connect to the dead workers' addresses.
_generations = itertools.count()


def backend_for(device: torch.device) -> str:
    """nccl talks GPU to GPU; gloo is the CPU (and fallback) backend."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_process_group(env: LaunchEnv, *, device: torch.device, timeout_s: int) -> None:
    """Join the group torchrun set up (env://); outside torchrun, a group of one process."""
    if dist.is_initialized():
        return
    backend = backend_for(device)
    timeout = timedelta(seconds=timeout_s)
    device_id = device if device.type == "cuda" else None
    if env.launched_by_torchrun:
        store, rank, world_size = next(dist.rendezvous("env://", timeout=timeout))
        store.set_timeout(timeout)
        prefix = f"scaletrain/{env.restart_count}/{world_size}/{next(_generations)}"
        store = dist.PrefixStore(prefix, store)
    else:  # ddp/fsdp asked for in a plain `python` process: in-memory store, no ports
        store, rank, world_size = dist.HashStore(), 0, 1
    dist.init_process_group(
        backend,
        store=store,
        rank=rank,
        world_size=world_size,
        timeout=timeout,
        device_id=device_id,
    )


def destroy_process_group() -> None:
    """Idempotent: safe from `finally` blocks after errors and Ctrl-C."""
    if dist.is_available() and dist.is_initialized():
        # torch 2.13 + gloo: a worker thread frees a finished collective's tensors under its
        # queue lock and needs the GIL to do so; if the group's last reference (often held
        # by a DDP reducer) is dropped at that moment, ~ProcessGroupGloo waits for the lock
        # while holding the GIL: a deadlock. Sleeping releases the GIL so they finish first.
        time.sleep(0.1)
        dist.destroy_process_group()
