"""Evaluation batches: each rank's contiguous, unpadded shard of a split, in order."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from scaletrain.data.bundle import Split
from scaletrain.data.loaders.dataset_loader import DatasetBatches, MicroBatch


def rank_slice(num_samples: int, *, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous share; shares differ in size by at most one."""
    base, extra = divmod(num_samples, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class EvalLoader:
    """Rank's contiguous, unpadded shard of a split, in order, as (inputs, targets) batches.

    Shards differ in size by at most one sample and cover every sample exactly once, so
    summed metrics over ranks are exact: nothing is padded, so nothing needs discounting.
    In-memory splits copy the shard to the device once; datasets are read batch by batch.
    """

    def __init__(
        self,
        split: Split,
        *,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        num_workers: int | str = "auto",
    ):
        assert batch_size > 0 and 0 <= rank < world_size
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.shard_start, self.shard_stop = rank_slice(len(split), rank=rank, world_size=world_size)
        self.num_samples = self.shard_stop - self.shard_start
        self._dataset_loader: DatasetBatches | None = None
        if split.inputs is not None:
            self._inputs = split.inputs[self.shard_start : self.shard_stop].to(self.device)
            self._targets = split.targets[self.shard_start : self.shard_stop].to(self.device)
        else:
            self._dataset_loader = DatasetBatches(
                split.dataset,
                micro_batch_size=batch_size,
                device=self.device,
                num_workers=num_workers,
                transform=split.transform,
            )

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def sample_ids(self) -> torch.Tensor:
        """Global ids of this rank's samples, in the order the batches yield them."""
        return torch.arange(self.shard_start, self.shard_stop)

    def __iter__(self) -> Iterator[MicroBatch]:
        if self.num_samples == 0:
            return
        if self._dataset_loader is None:
            inputs = self._inputs.split(self.batch_size)
            yield from zip(inputs, self._targets.split(self.batch_size), strict=True)
            return
        for micro_batches, _ in self._dataset_loader.steps([self.sample_ids()]):
            yield from micro_batches
