"""Shard loader throughput vs plain NumPy memmap slicing (the floor) and torch's DataLoader.

Writes N samples of float32 features (default 256 MiB) as scaletrain shards and as one .npy,
then reads one shuffled epoch in micro batches, four ways:
  numpy floor      the shards as memmaps (all open), ``mm[rows]`` per shard in a loop
  shard loader     scaletrain's BatchLoader over ShardSamples, 0 / 1 / 2 workers (threads)
  torch processes  torch's DataLoader over the same ShardSamples with 1 / 2 worker processes
  torch in-memory  torch.utils.data.DataLoader(TensorDataset, shuffle=True, batch_size=B)
  tensor path      scaletrain's in-memory BatchLoader (the split held as one tensor)
Every variant reads the same rows in the same order (except torch's, which shuffles its own).

    python -m bench.data.loader_throughput [--mib 256] [--width 1024] [--batch 256]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from scaletrain._alloc import tune_malloc
from scaletrain.data import BatchLoader, Split, epoch_order
from scaletrain.data.shards import SampleShardWriter, write_manifest
from scaletrain.data.shards.reader import ShardSamples


def write_shards(root: Path, *, num_rows: int, width: int, shard_mib: int) -> dict:
    fields = {
        "inputs": {"dtype": "float32", "shape": [width]},
        "targets": {"dtype": "int64", "shape": []},
    }
    writer = SampleShardWriter(root, "train", fields=fields, shard_bytes=shard_mib << 20)
    generator = np.random.default_rng(0)
    for start in range(0, num_rows, 4096):
        count = min(4096, num_rows - start)
        writer.append(
            inputs=generator.standard_normal((count, width), dtype=np.float32),
            targets=np.arange(start, start + count),
        )
    split = writer.close()
    write_manifest(root, {"kind": "samples", "fields": fields, "splits": {"train": split}})
    return {"fields": fields, "split": split}


def numpy_floor(root: Path, split: dict, order: np.ndarray, batch: int) -> float:
    """Seconds to gather every batch with NumPy fancy indexing on open memmaps."""
    maps = [np.load(root / s["files"]["inputs"]["path"], mmap_mode="r") for s in split["shards"]]
    targets = [
        np.load(root / s["files"]["targets"]["path"], mmap_mode="r") for s in split["shards"]
    ]
    starts = np.concatenate([[0], np.cumsum([s["num_samples"] for s in split["shards"]])])
    began = time.perf_counter()
    for first in range(0, len(order), batch):
        rows = order[first : first + batch]
        shard_of = np.searchsorted(starts, rows, side="right") - 1
        out = np.empty((len(rows), maps[0].shape[1]), dtype=np.float32)
        out_targets = np.empty(len(rows), dtype=np.int64)
        for shard in np.unique(shard_of):
            picked = np.flatnonzero(shard_of == shard)
            out[picked] = maps[shard][rows[picked] - starts[shard]]
            out_targets[picked] = targets[shard][rows[picked] - starts[shard]]
    return time.perf_counter() - began


def _as_is(batch):
    return batch  # ShardSamples.__getitems__ already returns (inputs, targets) tensors


def epoch_seconds(loader) -> tuple[float, int]:
    began, seen = time.perf_counter(), 0
    for step in loader:
        for inputs, _ in getattr(step, "micro_batches", [step]):
            seen += len(inputs)
    return time.perf_counter() - began, seen


def epoch_seconds_plain(loader) -> float:
    began = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--shard-mib", type=int, default=64)
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--repeats", type=int, default=7, help="Best of this many epochs.")
    args = parser.parse_args()
    tune_malloc()  # as every scaletrain run does (scaletrain/_alloc.py); the floor gets it too
    num_rows = (args.mib << 20) // (args.width * 4 + 8)
    row_mb = (args.width * 4 + 8) / 1e6
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        written = write_shards(root, num_rows=num_rows, width=args.width, shard_mib=args.shard_mib)
        order = epoch_order(num_rows, seed=0, epoch=0, shuffle=True).numpy()
        numpy_floor(root, written["split"], order, args.batch)  # warm the page cache
        dataset = ShardSamples(root, written["split"], written["fields"], max_open=64)
        loaders = {
            f"shard loader, {workers} workers": BatchLoader(
                Split(None, None, dataset=dataset),
                global_batch_size=args.batch,
                micro_batch_size=args.batch,
                shuffle=True,
                seed=0,
                drop_last=False,
                num_workers=workers,
            )
            for workers in [int(w) for w in args.workers.split(",")]
        }
        batches = [order[i : i + args.batch].tolist() for i in range(0, num_rows, args.batch)]
        for workers in [int(w) for w in args.workers.split(",") if int(w) > 0]:
            loaders[f"torch DataLoader over the shards, {workers} processes"] = DataLoader(
                dataset,
                batch_sampler=batches,
                num_workers=workers,
                collate_fn=_as_is,
                persistent_workers=True,
                prefetch_factor=4,
            )
        # Rounds of floor then each loader, best of the rounds: the VM's speed drifts, and
        # interleaving exposes every reader to the same drift.
        timings: dict[str, list[float]] = {"numpy floor": []}
        for _ in range(args.repeats):
            timings["numpy floor"].append(numpy_floor(root, written["split"], order, args.batch))
            for name, loader in loaders.items():
                timings.setdefault(name, []).append(epoch_seconds(loader)[0])
        results.update({name: min(seconds) for name, seconds in timings.items()})
        inputs = torch.from_numpy(np.concatenate(list(dataset.field("inputs"))))
        targets = torch.arange(num_rows)
        torch_loader = DataLoader(
            TensorDataset(inputs, targets), batch_size=args.batch, shuffle=True
        )
        results["torch DataLoader, in-memory TensorDataset"] = min(
            epoch_seconds_plain(torch_loader) for _ in range(args.repeats)
        )
        tensors = BatchLoader(
            Split(inputs, targets),
            global_batch_size=args.batch,
            micro_batch_size=args.batch,
            shuffle=True,
            seed=0,
            drop_last=False,
        )
        results["scaletrain tensor path, in-memory"] = min(
            epoch_seconds(tensors)[0] for _ in range(args.repeats)
        )
    floor = results["numpy floor"]
    rows = []
    for name, seconds in results.items():
        rows.append(
            {
                "reader": name,
                "samples_per_s": round(num_rows / seconds),
                "mb_per_s": round(num_rows * row_mb / seconds),
                "share_of_floor": round(floor / seconds, 3),
            }
        )
    print(
        json.dumps(
            {
                "machine": f"{platform.processor() or platform.machine()}, "
                f"{torch.get_num_threads()} threads",
                "rows": num_rows,
                "batch": args.batch,
                "row_bytes": args.width * 4 + 8,
            },
            indent=None,
        )
    )
    for row in rows:
        print(
            f"{row['reader']:45s} {row['samples_per_s']:>10,d} samples/s "
            f"{row['mb_per_s']:>7,d} MB/s  {row['share_of_floor']:.0%} of floor"
        )


if __name__ == "__main__":
    main()
