"""Subprocess of test_ps_crash.py: a process holding a ShardStore, killed with SIGKILL.

argv: shards dir, flush_every, window_mb ("none" for unwindowed), numel per parameter,
kill_update (update number during which to SIGKILL itself, 0: never), kill_param (index of
the parameter whose gradient fetch triggers it), max_updates. Prints `version N` after each
applied update (flushed, so the parent sees it before a kill).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator, Mapping

import torch

from scaletrain.parallel.ps import ShardStore

NUM_PARAMS = 4


def make_optimizer(params):
    return torch.optim.Adam(params, lr=0.01)


def initial_params(numel: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {f"layer{i}.weight": torch.randn(numel, generator=generator) for i in range(NUM_PARAMS)}


def update_grads(update: int, numel: int) -> dict[str, torch.Tensor]:
    """The gradients of update number `update` (1-based), the same in every process."""
    generator = torch.Generator().manual_seed(1000 + update)
    return {f"layer{i}.weight": torch.randn(numel, generator=generator) for i in range(NUM_PARAMS)}


class Reference:
    """The same updates by one plain torch Adam: the ground truth, advanced on demand."""

    def __init__(self, numel: int):
        self.numel = numel
        self.version = 0
        self.params = {name: p.clone() for name, p in initial_params(numel).items()}
        self.optimizer = make_optimizer(list(self.params.values()))

    def at(self, version: int) -> dict[str, torch.Tensor]:
        assert version >= self.version, "the reference only moves forward"
        while self.version < version:
            self.version += 1
            grads = update_grads(self.version, self.numel)
            for name, param in self.params.items():
                param.grad = grads[name]
            self.optimizer.step()
        return self.params


class KillingGrads(Mapping):
    """Gradients that SIGKILL this process at the second fetch of one parameter's gradient:
    the store fetches each once to check shapes, then (windowed) each just before stepping
    it, so the parameters before it are already updated in place: a torn update."""

    def __init__(self, grads: dict[str, torch.Tensor], kill_name: str | None):
        self.grads = grads
        self.kill_name = kill_name
        self.fetches = 0

    def __getitem__(self, name: str) -> torch.Tensor:
        if name == self.kill_name:
            self.fetches += 1
            if self.fetches == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        return self.grads[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.grads)

    def __len__(self) -> int:
        return len(self.grads)


def main() -> None:
    root, flush_every, window, numel, kill_update, kill_param, max_updates = sys.argv[1:8]
    numel, kill_update, max_updates = int(numel), int(kill_update), int(max_updates)
    torch.set_num_threads(1)
    params = initial_params(numel)
    resume = os.path.exists(os.path.join(root, "server_0", "manifest.json"))
    store = ShardStore(
        params,
        make_optimizer=make_optimizer,
        shards_dir=root,
        server=0,
        flush_every=int(flush_every),
        resume=resume,
        window_mb=None if window == "none" else float(window),
    )
    print(f"start {store.version}", flush=True)
    while store.version < max_updates:
        update = store.version + 1
        grads = update_grads(update, numel)
        armed = update == kill_update
        store.apply(KillingGrads(grads, list(grads)[int(kill_param)] if armed else None))
        print(f"version {store.version}", flush=True)
    store.close()


if __name__ == "__main__":
    main()
