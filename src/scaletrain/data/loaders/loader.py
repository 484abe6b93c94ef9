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

from scaletrain.data.bundle import Split
from scaletrain.data.loaders.dataset_loader import DatasetBatches, MicroBatch
from scaletrain.data.loaders.eval_loader import EvalLoader, rank_slice
from scaletrain.errors import DataError

__all__ = [
    "BatchLoader",
    "EvalLoader",
    "MicroBatch",
    "StepBatch",
    "epoch_order",
    "rank_slice",
    "smallest_micro_batch",
    "step_bounds",
]


@dataclass
class StepBatch:
    """This rank's share of one optimizer step."""

    micro_batches: list[MicroBatch]  # (inputs, targets) on the loader's device; may be empty
    num_samples_global: int  # samples in this step over all ranks: the loss denominator
    sample_ids: torch.Tensor  # int64 global ids this rank used, CPU
    ends_epoch: bool = False  # the epoch's last step


def epoch_order(
    num_samples: int,
    *,
    seed: int,
    epoch: int,
    shuffle: bool,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Global sample order of one epoch: a function of (seed, epoch) only, int64 on CPU.

    With ``weights`` (data.sampler: balanced) the epoch is ``num_samples`` draws with
    replacement in proportion to them, still keyed on (seed, epoch) only.
    """
    if not shuffle and weights is None:
        return torch.arange(num_samples)
    digest = hashlib.sha256(f"scaletrain-order:{seed}:{epoch}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    if weights is not None:
        return torch.multinomial(weights, num_samples, replacement=True, generator=generator)
    return torch.randperm(num_samples, generator=generator)


def step_bounds(
    num_samples: int, *, position: int, global_batch_size: int, world_size: int, drop_last: bool
) -> list[tuple[int, int]]:
    """Global positions [start, stop) of each step of an epoch from `position` on."""
    starts = range(position, num_samples, global_batch_size)
    bounds = [(start, min(start + global_batch_size, num_samples)) for start in starts]
    if drop_last:
        bounds = [(start, stop) for start, stop in bounds if stop - start == global_batch_size]
    last = bounds[-1][1] - bounds[-1][0] if bounds else 0
    if len(bounds) >= 2 and last < world_size:
        # A final step shorter than the world would leave a rank with no sample, and a
        # rank that runs no backward stalls DDP/FSDP's gradient collectives. Instead of
        # padding (duplicates that must not count), the last two steps share their
        # samples: same order, same number of steps, every rank gets at least one.
        (start, _), (_, stop) = bounds[-2], bounds[-1]
        middle = start + (stop - start + 1) // 2
        bounds[-2:] = [(start, middle), (middle, stop)]
    return bounds


def smallest_micro_batch(
    num_samples: int,
    *,
    global_batch_size: int,
    micro_batch_size: int,
    world_size: int,
    drop_last: bool,
) -> int:
    """The fewest samples a rank's micro batch holds in an epoch (a batch norm needs 2)."""
    bounds = step_bounds(
        num_samples,
        position=0,
        global_batch_size=global_batch_size,
        world_size=world_size,
        drop_last=drop_last,
    )
    sizes = []
    for start, stop in {*bounds[:1], *bounds[-2:]}:  # every step but the last two is full
        for rank in range(world_size):
            low, high = rank_slice(stop - start, rank=rank, world_size=world_size)
            if high > low:  # the share's last micro batch is its smallest
                sizes.append((high - low) % micro_batch_size or micro_batch_size)
    return min(sizes, default=0)


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
        num_workers: int | str = "auto",
    ):
        assert global_batch_size > 0 and micro_batch_size > 0 and 0 <= rank < world_size
        self.num_samples = len(split)
        self.weights = split.sample_weights
        self.augment = split.augment  # train-only: EvalLoader never applies it
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
        self._dataset_loader: DatasetBatches | None = None
        if split.inputs is not None:
            # The fast path: every rank holds the whole split on its device, copied once.
            self._inputs = split.inputs.to(self.device)
            self._targets = split.targets.to(self.device)
        else:
            # Datasets and memory-mapped shards: each micro batch is read when needed.
            self._dataset_loader = DatasetBatches(
                split.dataset,
                micro_batch_size=micro_batch_size,
                device=self.device,
                num_workers=num_workers,
                transform=split.transform,
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
            self.num_samples,
            seed=self.seed,
            epoch=self.epoch,
            shuffle=self.shuffle,
            weights=self.weights,
        )
        bounds = self._step_bounds(self.samples_consumed)
        if self._dataset_loader is None:
            steps = self._tensor_steps(order, bounds)
        else:
            steps = self._dataset_loader.steps(self._rank_ids_per_step(order, bounds))
        epoch_end = bounds[-1][1] if bounds else None
        for (start, stop), (micro_batches, sample_ids) in zip(bounds, steps, strict=True):
            if self.augment is not None:  # in this thread, in order: torch's RNG, checkpointed
                micro_batches = [self.augment(*batch) for batch in micro_batches]
            # Counted as consumed when handed out: a checkpoint taken after training on this
            # step must resume after it.
            self.samples_consumed = stop
            yield StepBatch(
                micro_batches,
                num_samples_global=stop - start,
                sample_ids=sample_ids,
                ends_epoch=stop == epoch_end,
            )
        self.epoch += 1
        self.samples_consumed = 0

    def _step_bounds(self, position: int) -> list[tuple[int, int]]:
        return step_bounds(
            self.num_samples,
            position=position,
            global_batch_size=self.global_batch_size,
            world_size=self.world_size,
            drop_last=self.drop_last,
        )

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
            inputs = self._inputs.index_select(0, rows)
            targets = self._targets.index_select(0, rows)
            if high - low > self.micro_batch_size:  # gradient accumulation
                micro_batches = list(
                    zip(
                        inputs.split(self.micro_batch_size),
                        targets.split(self.micro_batch_size),
                        strict=True,
                    )
                )
            else:
                micro_batches = [(inputs, targets)] if high > low else []
            yield micro_batches, order[low:high]

    def _rank_ids_per_step(
        self, order: torch.Tensor, bounds: list[tuple[int, int]]
    ) -> list[torch.Tensor]:
        return [order[slice(*self._rank_ids(start, stop))] for start, stop in bounds]
