"""Micro batches read from a Dataset (user data or memory-mapped shards) by a DataLoader.

The index lists of every micro batch are planned up front (by ``BatchLoader`` or
``EvalLoader``) and handed to one DataLoader through a refillable batch sampler; its workers
take micro batches round-robin and the DataLoader returns them in plan order, so the samples
a rank sees do not depend on the worker count: none is read twice, none is skipped. Shard
datasets (``returns_batches``) gather a whole micro batch per call, so no per-sample collate.
"""

from __future__ import annotations

import os
import queue
import re
import threading
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from scaletrain.errors import DataError

MicroBatch = tuple[torch.Tensor, torch.Tensor]


def resolve_num_workers(num_workers: int | str, *, device: torch.device, batched: bool) -> int:
    """``auto``: no worker processes on CPU (they would compete with the model for cores) or
    for memory-mapped shards (gathering in-process beats shipping batches between processes;
    a prefetch thread overlaps it with the GPU instead); else up to 4 for user Datasets."""
    if num_workers != "auto":
        return int(num_workers)
    if device.type == "cpu" or batched:
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def prefetch(batches: Iterator, *, depth: int) -> Iterator:
    """Run ``batches`` in a background thread, ``depth`` items ahead (NumPy's row gathers
    release the GIL, so they overlap with the training thread's kernel launches)."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def offer(item) -> bool:
        """Queue ``item`` unless the consumer has left; False once it has."""
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not offer(batch):
                    return
            offer(done)
        except BaseException as error:  # handed to the consumer, raised there
            offer(error)

    thread = threading.Thread(target=produce, name="scaletrain-prefetch", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _whole_batch(batch):
    return batch  # __getitems__ already returned (inputs, targets) tensors


class NamedSamples(Dataset):
    """A user Dataset whose failing sample raises one DataError naming the sample's index."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            return self.dataset[index]
        except Exception as error:
            name, index = _origin(self.dataset, index)
            raise DataError(f"{name}[{index}]: {type(error).__name__}: {error}") from error


def _origin(dataset: Dataset, index: int) -> tuple[str, int]:
    """The user's Dataset and its own index of a sample, through the split's Subsets."""
    while isinstance(dataset, Subset):
        dataset, index = dataset.dataset, int(dataset.indices[index])
    return type(dataset).__name__, index


def _samples(dataset: Dataset, ids: list[int], *, shown: int = 4) -> str:
    """Name samples for a message: the user's Dataset and indices, or the shard files."""
    if isinstance(dataset, NamedSamples):
        dataset = dataset.dataset
    describe = getattr(dataset, "describe", None)  # shards name their files and rows
    if describe is not None:
        return describe(ids)
    origins = [_origin(dataset, index) for index in ids[:shown]]
    more = ", ..." if len(ids) > shown else ""
    listed = ", ".join(str(index) for _, index in origins)
    return f"{origins[0][0]}[{listed}{more}] ({len(ids)} samples)" if origins else "no samples"


def _one_line(error: DataError) -> str:
    """A DataError re-raised from a loader worker carries the worker's traceback: keep the
    message itself, and say which worker."""
    text = str(error)
    if "Original Traceback" not in text:
        return text
    message = text.rsplit("DataError: ", 1)[-1].strip().splitlines()[0]
    worker = text.splitlines()[0].removeprefix("Caught DataError in ").rstrip(".")
    return f"{message} (in {worker})"


class _MicroBatchSampler(Sampler[list[int]]):
    """Hands the DataLoader the micro-batch index lists planned for the current epoch."""

    def __init__(self):
        self.micro_batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(list(self.micro_batches))

    def __len__(self) -> int:
        return len(self.micro_batches)


class DatasetBatches:
    """A Dataset read by one DataLoader whose batch sampler is refilled for every pass."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        micro_batch_size: int,
        device: torch.device,
        num_workers: int | str,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.device = device
        self.micro_batch_size = micro_batch_size
        self.transform = transform
        self.sampler = _MicroBatchSampler()
        batched = getattr(dataset, "returns_batches", False)
        if not batched:  # shards name their own files; a user Dataset's sample is named here
            dataset = NamedSamples(dataset)
        num_workers = resolve_num_workers(num_workers, device=device, batched=batched)
        # Shards without workers skip the DataLoader: one __getitems__ call per micro batch.
        self.direct = dataset if batched and num_workers == 0 else None
        # On CUDA without workers, a thread gathers (and pins) the next micro batches.
        self.prefetch_depth = 4 if device.type == "cuda" and num_workers == 0 else 0
        # One DataLoader for the whole run so persistent workers survive across epochs; its
        # own generator keeps it from drawing worker seeds from the global RNG.
        self.loader = DataLoader(
            dataset,
            batch_sampler=self.sampler,
            num_workers=num_workers,
            collate_fn=_whole_batch if batched else None,
            pin_memory=device.type == "cuda",
            persistent_workers=num_workers > 0,
            prefetch_factor=4 if num_workers > 0 else None,
            generator=torch.Generator().manual_seed(0),
        )

    def steps(
        self, rank_ids: list[torch.Tensor]
    ) -> Iterator[tuple[list[MicroBatch], torch.Tensor]]:
        """Per step: this rank's micro batches, read in the planned order, and their ids."""
        plan = [ids.split(self.micro_batch_size) if len(ids) else () for ids in rank_ids]
        if self.direct is not None:
            batches = (self._fetch(chunk) for chunks in plan for chunk in chunks)
        else:
            self.sampler.micro_batches = [chunk.tolist() for chunks in plan for chunk in chunks]
            batches = iter(self.loader) if self.sampler.micro_batches else iter(())
        if self.prefetch_depth and any(plan):
            batches = prefetch(batches, depth=self.prefetch_depth)
        received = 0  # micro batches of this pass handed over so far
        try:
            for ids, chunks in zip(rank_ids, plan, strict=True):
                read = []
                try:
                    for _ in chunks:
                        read.append(next(batches))
                        received += 1
                except DataError as error:
                    raise DataError(_one_line(error)) from None
                except RuntimeError as error:
                    if "DataLoader worker (pid" not in str(error):
                        raise
                    awaited = chunks[len(read)].tolist()
                    raise self._worker_died(error, received, awaited) from None
                yield [self._to_device(batch) for batch in read], ids
        finally:
            if hasattr(batches, "close"):
                batches.close()  # stops a prefetch thread when the epoch is left early

    def _worker_died(self, error: RuntimeError, received: int, awaited: list[int]) -> DataError:
        """One line: which worker (index and pid), how it ended, what the run waited for."""
        text = str(error)
        listed = re.search(r"\(pid(?:\(s\))? ([\d, ]+)\)", text)  # torch's two wordings
        pids = [int(pid) for pid in re.findall(r"\d+", listed.group(1))] if listed else []
        workers = getattr(self.loader._iterator, "_workers", [])  # the epoch's processes
        numbers = [index for index, worker in enumerate(workers) if worker.pid in pids]
        # batch k of a pass goes to worker k mod num_workers (the DataLoader's round robin)
        number = numbers[0] if numbers else received % max(1, self.loader.num_workers)
        how = text.partition("killed by signal: ")[2].rstrip(".") or "exited unexpectedly"
        return DataError(
            f"loader worker {number} of {self.loader.num_workers} (pid "
            f"{', '.join(map(str, pids))}) died ({how}) while the run waited for micro batch "
            f"{received + 1} of this pass: {_samples(self.loader.dataset, awaited)}; if the "
            "system ran out of memory, lower data.num_workers or the batch size"
        )

    def _fetch(self, ids: torch.Tensor) -> MicroBatch:
        inputs, targets = self.direct.__getitems__(ids.numpy())
        if self.device.type == "cuda":  # page-locked, so the copy to the device is async
            inputs, targets = inputs.pin_memory(), targets.pin_memory()
        return inputs, targets

    def _to_device(self, batch) -> MicroBatch:
        inputs, targets = batch
        # Pinned host memory makes the copy asynchronous on CUDA.
        non_blocking = self.device.type == "cuda"
        inputs = inputs.to(self.device, non_blocking=non_blocking)
        targets = targets.to(self.device, non_blocking=non_blocking)
        if self.transform is not None:
            inputs = self.transform(inputs)  # e.g. uint8 -> scaled float32, on the device
        return inputs, targets
