"""The store of test_ps_larger_than_memory.py: 4 parameters of 48 MiB, Adam, lazy tensors.

Initial values and gradients are made one parameter at a time when the store asks for them
(a Mapping), so no process ever holds all of them at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch

NUM_PARAMS = 4
NUMEL = 12 * 2**20  # 48 MiB of float32 per parameter
NAMES = [f"block{i}.weight" for i in range(NUM_PARAMS)]


def make_optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)


def _values(seed: int, name: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 100 + NAMES.index(name))
    return torch.randn(NUMEL, generator=generator)


class LazyTensors(Mapping):
    """name -> a tensor made when asked for (seeded by `seed` and the name)."""

    def __init__(self, seed: int):
        self.seed = seed

    def __getitem__(self, name: str) -> torch.Tensor:
        return _values(self.seed, name)

    def __iter__(self) -> Iterator[str]:
        return iter(NAMES)

    def __len__(self) -> int:
        return NUM_PARAMS


def initial_params() -> LazyTensors:
    return LazyTensors(seed=0)


def grads_for(update: int) -> LazyTensors:
    return LazyTensors(seed=update)


def meta_params() -> dict[str, torch.Tensor]:
    """Shapes and dtypes only: a resumed store takes the values from its files."""
    return {name: torch.empty(NUMEL, device="meta") for name in NAMES}
