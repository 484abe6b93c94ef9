"""Batches for training (exact resume, rank sharding) and for evaluation (contiguous shards).

The sample order of epoch e is a permutation of the global indices keyed on (seed, epoch)
only. Each optimizer step takes the next ``global_batch_size`` positions of that order; rank
r takes a contiguous, balanced slice of them and cuts it into micro batches. The position
(epoch, samples consumed) is therefore all a checkpoint needs, whatever the world size,
micro batch size or worker count of the run that resumes it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Sampler, Subset

from scaletrain.data.bundle import Split
from scaletrain.errors import DataError

MicroBatch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class StepBatch:
    """This rank's share of one optimizer step."""

    micro_batches: list[MicroBatch]  # (inputs, targets) on the loader's device; may be empty
    num_samples_global: int  # samples in this step over all ranks: the loss denominator
    sample_ids: torch.Tensor  # int64 global ids this rank used, CPU


def epoch_order(num_samples: int, *, seed: int, epoch: int, shuffle: bool) -> torch.Tensor:
    """Global sample order of one epoch: a function of (seed, epoch) only, int64 on CPU."""
    if not shuffle:
        return torch.arange(num_samples)
    digest = hashlib.sha256(f"scaletrain-order:{seed}:{epoch}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    return torch.randperm(num_samples, generator=generator)


def rank_slice(num_samples: int, *, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous share; shares differ in size by at most one."""
    base, extra = divmod(num_samples, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class BatchLoader:
    def __init__(
        self,
        split: Split,
        *,
        global_batch_size: int,
        micro_batch_size: int,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        num_workers: int = 0,
    ):
        assert global_batch_size > 0 and micro_batch_size > 0 and 0 <= rank < world_size
        self.num_samples = len(split)
        if drop_last and self.num_samples < global_batch_size:
            raise DataError(
                f"data.drop_last: the train split has {self.num_samples} samples, fewer than "
                f"one batch of {global_batch_size} (train.batch_size); nothing would be left"
            )
        self.global_batch_size = global_batch_size
        self.micro_batch_size = micro_batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.epoch = 0
        self.samples_consumed = 0  # global samples of this epoch already handed out
        self._dataset_loader: _DatasetLoader | None = None
        if split.inputs is not None:
            # The fast path: every rank holds the whole split on its device, copied once.
            self._inputs = split.inputs.to(self.device)
            self._targets = split.targets.to(self.device)
        else:
            self._dataset_loader = _DatasetLoader(
                split.dataset,
                micro_batch_size=micro_batch_size,
                device=self.device,
                num_workers=num_workers,
            )

    def steps_per_epoch(self) -> int:
        """Optimizer steps in one full epoch."""
        return self._num_steps_from(0)

    def remaining_steps(self) -> int:
        """Steps left in the current epoch from the current position."""
        return self._num_steps_from(self.samples_consumed)

    def _num_steps_from(self, position: int) -> int:
        left = self.num_samples - position
        if self.drop_last:
            return left // self.global_batch_size
        return math.ceil(left / self.global_batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first step."""
        self.epoch = epoch
        self.samples_consumed = 0

    def state_dict(self) -> dict:
        """Position as JSON-safe ints; a finished epoch is reported as the next one's start."""
        if self.remaining_steps() == 0:
            return {"epoch": self.epoch + 1, "samples_consumed": 0}
        return {"epoch": self.epoch, "samples_consumed": self.samples_consumed}

    def load_state_dict(self, state: dict) -> None:
        """Continue with exactly the next global samples, for any world or micro batch size."""
        consumed = int(state["samples_consumed"])
        if not 0 <= consumed <= self.num_samples:
            raise DataError(
                f"saved data position {consumed} is outside the train split of "
                f"{self.num_samples} samples; did the data change since the checkpoint?"
            )
        self.epoch = int(state["epoch"])
        self.samples_consumed = consumed

    def __iter__(self) -> Iterator[StepBatch]:
        """The remaining steps of the current epoch; then the epoch counter advances."""
        if self.remaining_steps() == 0:
            # An epoch left without exhausting its iterator is finished: behave exactly as a
            # loader restored from state_dict() would, not yield an empty epoch.
            self.set_epoch(self.epoch + 1)
        order = epoch_order(
            self.num_samples, seed=self.seed, epoch=self.epoch, shuffle=self.shuffle
        )
        bounds = self._step_bounds(self.samples_consumed)
        if self._dataset_loader is None:
            steps = self._tensor_steps(order, bounds)
        else:
            steps = self._dataset_loader.steps(self._rank_ids_per_step(order, bounds))
        for (start, stop), (micro_batches, sample_ids) in zip(bounds, steps, strict=True):
            # Counted as consumed when handed out: a checkpoint taken after training on this
            # step must resume after it.
            self.samples_consumed = stop
            yield StepBatch(micro_batches, num_samples_global=stop - start, sample_ids=sample_ids)
        self.epoch += 1
        self.samples_consumed = 0

    def _step_bounds(self, position: int) -> list[tuple[int, int]]:
        """Global positions [start, stop) of each remaining step of the epoch."""
        starts = range(position, self.num_samples, self.global_batch_size)
        bounds = [
            (start, min(start + self.global_batch_size, self.num_samples)) for start in starts
        ]
        return bounds[: self._num_steps_from(position)]

    def _rank_ids(self, start: int, stop: int) -> tuple[int, int]:
        """Positions [low, high) of this rank's share of the step [start, stop)."""
        low, high = rank_slice(stop - start, rank=self.rank, world_size=self.world_size)
        return start + low, start + high

    def _tensor_steps(
        self, order: torch.Tensor, bounds: list[tuple[int, int]]
    ) -> Iterator[tuple[list[MicroBatch], torch.Tensor]]:
        # One index copy per epoch, from pinned memory so it does not stall the queue; each
        # step is then two gathers on the device, with no host sync.
        if self.device.type == "cuda":
            order_on_device = order.pin_memory().to(self.device, non_blocking=True)
        else:
            order_on_device = order
        for start, stop in bounds:
            low, high = self._rank_ids(start, stop)
            rows = order_on_device[low:high]
            inputs = self._inputs.index_select(0, rows).split(self.micro_batch_size)
            targets = self._targets.index_select(0, rows).split(self.micro_batch_size)
            micro_batches = list(zip(inputs, targets, strict=True)) if high > low else []
            yield micro_batches, order[low:high]

    def _rank_ids_per_step(
        self, order: torch.Tensor, bounds: list[tuple[int, int]]
    ) -> list[torch.Tensor]:
        return [order[slice(*self._rank_ids(start, stop))] for start, stop in bounds]


class _MicroBatchSampler(Sampler[list[int]]):
    """Hands the DataLoader the micro-batch index lists planned for the current epoch."""

    def __init__(self):
        self.micro_batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(list(self.micro_batches))

    def __len__(self) -> int:
        return len(self.micro_batches)


class _DatasetLoader:
    """A user Dataset read by a DataLoader whose batch sampler is refilled every epoch."""

    def __init__(self, dataset, *, micro_batch_size: int, device: torch.device, num_workers: int):
        self.device = device
        self.micro_batch_size = micro_batch_size
        self.sampler = _MicroBatchSampler()
        # One DataLoader for the whole run so persistent workers survive across epochs; its
        # own generator keeps it from drawing worker seeds from the global RNG.
        self.loader = DataLoader(
            dataset,
            batch_sampler=self.sampler,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=num_workers > 0,
            generator=torch.Generator().manual_seed(0),
        )

    def steps(
        self, rank_ids: list[torch.Tensor]
    ) -> Iterator[tuple[list[MicroBatch], torch.Tensor]]:
        """Per step: this rank's micro batches, read in the planned order, and their ids."""
        plan = [ids.split(self.micro_batch_size) if len(ids) else () for ids in rank_ids]
        self.sampler.micro_batches = [chunk.tolist() for chunks in plan for chunk in chunks]
        batches = iter(self.loader) if self.sampler.micro_batches else iter(())
        for ids, chunks in zip(rank_ids, plan, strict=True):
            yield [self._to_device(next(batches)) for _ in chunks], ids

    def _to_device(self, batch) -> MicroBatch:
        inputs, targets = batch
        # Pinned host memory makes the copy asynchronous on CUDA.
        non_blocking = self.device.type == "cuda"
        return (
            inputs.to(self.device, non_blocking=non_blocking),
            targets.to(self.device, non_blocking=non_blocking),
        )


class EvalLoader:
    """Rank's contiguous, unpadded shard of a split, in order, as (inputs, targets) batches.

    Shards differ in size by at most one sample and cover every sample exactly once, so
    summed metrics over ranks are exact. The shard is copied to the device once.
    """

    def __init__(
        self,
        split: Split,
        *,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        num_workers: int = 0,
    ):
        assert batch_size > 0 and 0 <= rank < world_size
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.shard_start, self.shard_stop = rank_slice(len(split), rank=rank, world_size=world_size)
        self.num_samples = self.shard_stop - self.shard_start
        self._dataset_loader: _DatasetLoader | None = None
        if split.inputs is not None:
            self._inputs = split.inputs[self.shard_start : self.shard_stop].to(self.device)
            self._targets = split.targets[self.shard_start : self.shard_stop].to(self.device)
        else:
            shard = Subset(split.dataset, range(self.shard_start, self.shard_stop))
            self._dataset_loader = _DatasetLoader(
                shard, micro_batch_size=batch_size, device=self.device, num_workers=num_workers
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
        for micro_batches, _ in self._dataset_loader.steps([torch.arange(self.num_samples)]):
            yield from micro_batches
