"""A fresh server's initial parameters come from worker 0, one parameter per call.

A server builds the model on the meta device (no memory) and so holds no values; worker 0
built the real model from the run's seed, so its untrained parameters are exactly the ones
every process would have built. Asking one parameter at a time keeps a server's memory at
one parameter, never its whole shard (nor the whole model)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
import torch.distributed.rpc as rpc
from torch import nn

_OFFERED: dict[str, nn.Parameter] = {}
_READY = threading.Event()


def offer(named: list[tuple[str, nn.Parameter]]) -> None:
    """On worker 0, before its first step: the parameters the servers may ask for."""
    _OFFERED.clear()
    _OFFERED.update(named)
    _READY.set()


def rpc_initial_value(name: str, timeout_s: float) -> torch.Tensor:
    """Runs on worker 0: a copy of one parameter as offered (before any update reached it:
    a worker pulls before its first step, and a pull waits for every server to start)."""
    if not _READY.wait(timeout_s):
        raise RuntimeError("worker 0 never offered its initial parameters")
    return _OFFERED[name].detach().to("cpu", copy=True)


def from_worker(worker: str, *, timeout_s: float) -> Callable[[str], torch.Tensor]:
    """On a server: `name -> initial value`, fetched from `worker` when asked."""

    def fetch(name: str) -> torch.Tensor:
        args = (name, timeout_s)
        return rpc.rpc_sync(worker, rpc_initial_value, args=args, timeout=timeout_s + 60)

    return fetch
