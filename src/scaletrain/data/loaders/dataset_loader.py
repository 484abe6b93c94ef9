"""Micro batches read from a Dataset: memory-mapped shards or a user's own Dataset.

The index lists of every micro batch are planned up front (by ``BatchLoader`` or
``EvalLoader``) and read in plan order, so the samples a rank sees do not depend on the
worker count: none is read twice, none is skipped. Shards (``returns_batches``) gather a
whole micro batch per call, on threads of the training process; a user Dataset is read by
one DataLoader whose worker processes take micro batches round-robin.
"""

from __future__ import annotations

import itertools
import os
import re
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import TypeVar

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from scaletrain.errors import DataError

MicroBatch = tuple[torch.Tensor, torch.Tensor]
T = TypeVar("T")


def resolve_num_workers(num_workers: int | str, *, device: torch.device, batched: bool) -> int:
    """``auto``: no workers on CPU (they would compete with the model for cores) or for
    memory-mapped shards (gathered in the training process; on CUDA one thread reads ahead
    anyway); else up to 4 worker processes for user Datasets."""
    if num_workers != "auto":
        return int(num_workers)
    if device.type == "cpu" or batched:
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def read_ahead(
    reads: Iterator[Callable[[], T]], *, threads: int, depth: int, independent: bool = False
) -> Iterator[T]:
    """Call ``reads`` on ``threads`` background threads, up to ``depth`` ahead of the
    consumer, and yield their results in order. NumPy's row gathers and pinning release the
    GIL, so the threads overlap with each other and with the training thread; a read's
    error is raised here, and leaving early cancels what was not started.

    ``independent`` reads may run in any order: a consumer that would wait for the oldest
    read then runs the next one not yet started itself, so it never idles while the data
    it needs is late (one thread then reads like two).
    """
    pool = ThreadPoolExecutor(threads, thread_name_prefix="scaletrain-read")
    pending: deque[tuple[Future, Callable[[], T]]] = deque(
        (pool.submit(read), read) for read in itertools.islice(reads, depth)
    )
    try:
        while pending:
            if independent and not pending[0][0].done():
                _run_one_here(pending)
            result = pending.popleft()[0].result()
            if (read := next(reads, None)) is not None:
                pending.append((pool.submit(read), read))
            yield result
    finally:
        for future, _ in pending:
            future.cancel()
        pool.shutdown(wait=True)


def _run_one_here(pending: deque[tuple[Future, Callable]]) -> None:
    """Run the first pending read no thread has started, in the calling thread."""
    for position, (future, read) in enumerate(pending):
        if future.cancel():  # True only for a read still waiting in the pool's queue
            done: Future = Future()
            try:
                done.set_result(read())
            except Exception as error:  # raised in order, when its turn comes
                done.set_exception(error)
            pending[position] = (done, read)
            return


def _grouped(chunks: list[torch.Tensor], *, rows: int) -> Iterator[list[torch.Tensor]]:
    """Consecutive chunks in groups of up to ``rows`` rows (a larger chunk goes alone)."""
    group: list[torch.Tensor] = []
    size = 0
    for chunk in chunks:
        if group and size + len(chunk) > rows:
            yield group
            group, size = [], 0
        group.append(chunk)
        size += len(chunk)
    if group:
        yield group


def _each(groups: Iterator[list[T]]) -> Iterator[T]:
    """The items of each group in turn; closing it closes ``groups`` (read-ahead threads)."""
    try:
        for group in groups:
            yield from group
    finally:
        groups.close()


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
    """Micro batches of a Dataset, read in the planned order.

    Memory-mapped shards are gathered by threads of the training process (``num_workers`` of
    them; on CUDA at least one, which also pins): a gather is one NumPy copy that releases
    the GIL, so no batch has to cross a process boundary (bench/data/README.md measures
    both). User Datasets are read by one DataLoader, with worker processes, whose batch
    sampler is refilled for every pass; without workers on CUDA a thread reads ahead.
    """

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
        batched = getattr(dataset, "returns_batches", False)
        if not batched:  # shards name their own files; a user Dataset's sample is named here
            dataset = NamedSamples(dataset)
        num_workers = resolve_num_workers(num_workers, device=device, batched=batched)
        on_cuda = device.type == "cuda"
        self.shards = dataset if batched else None
        self.rows_per_read = dataset.read_rows if batched else 1  # shards: several batches
        worker_processes = 0 if batched else num_workers
        self.read_threads = num_workers if batched else 0
        if on_cuda and not (self.read_threads or worker_processes):
            self.read_threads = 1  # overlap reading (and pinning) with the GPU
        # One DataLoader for the whole run so persistent workers survive across epochs; its
        # own generator keeps it from drawing worker seeds from the global RNG.
        self.loader = None
        if not batched:
            self.sampler = _MicroBatchSampler()  # refilled with each pass's plan
            self.loader = DataLoader(
                dataset,
                batch_sampler=self.sampler,
                num_workers=worker_processes,
                pin_memory=on_cuda,
                persistent_workers=worker_processes > 0,
                prefetch_factor=4 if worker_processes > 0 else None,
                generator=torch.Generator().manual_seed(0),
            )

    def steps(
        self, rank_ids: list[torch.Tensor]
    ) -> Iterator[tuple[list[MicroBatch], torch.Tensor]]:
        """Per step: this rank's micro batches, read in the planned order, and their ids."""
        plan = [ids.split(self.micro_batch_size) if len(ids) else () for ids in rank_ids]
        chunks_in_order = [chunk for chunks in plan for chunk in chunks]
        if self.shards is not None:  # a read gathers several micro batches at once
            groups = _grouped(chunks_in_order, rows=self.rows_per_read)
            reads = (partial(self._fetch, group) for group in groups)
        else:
            self.sampler.micro_batches = [chunk.tolist() for chunk in chunks_in_order]
            loaded = iter(self.loader) if chunks_in_order else iter(())
            reads = itertools.repeat(lambda: [next(loaded)], len(chunks_in_order))
        if self.read_threads and chunks_in_order:
            groups_read = read_ahead(
                reads,
                threads=self.read_threads,
                depth=2 * self.read_threads,
                independent=self.shards is not None,  # DataLoader reads come in order
            )
        else:
            groups_read = (read() for read in reads)
        batches = _each(groups_read)
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
            batches.close()  # stops the read-ahead threads when the epoch is left early

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

    def _fetch(self, chunks: list[torch.Tensor]) -> list[MicroBatch]:
        """Consecutive micro batches gathered in one call (fewer, larger NumPy copies and
        thread hand-offs), returned as views of it."""
        ids = chunks[0] if len(chunks) == 1 else torch.cat(chunks)
        inputs, targets = self.shards.__getitems__(ids.numpy())
        if self.device.type == "cuda":  # page-locked, so the copy to the device is async
            inputs, targets = inputs.pin_memory(), targets.pin_memory()
        if len(chunks) == 1:
            return [(inputs, targets)]
        sizes = [len(chunk) for chunk in chunks]
        return list(zip(inputs.split(sizes), targets.split(sizes), strict=True))

    def _to_device(self, batch) -> MicroBatch:
        inputs, targets = batch
        # Pinned host memory makes the copy asynchronous on CUDA.
        non_blocking = self.device.type == "cuda"
        inputs = inputs.to(self.device, non_blocking=non_blocking)
        targets = targets.to(self.device, non_blocking=non_blocking)
        if self.transform is not None:
            inputs = self.transform(inputs)  # e.g. uint8 -> scaled float32, on the device
        return inputs, targets
