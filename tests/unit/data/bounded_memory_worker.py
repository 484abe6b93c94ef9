"""Subprocess of test_shards_memory.py: train one epoch from shards under RLIMIT_AS.

argv: shard folder, headroom MiB, num_workers. Prints one JSON line.
"""

from __future__ import annotations

import json
import resource
import sys

import numpy as np
import torch

from scaletrain.config import DataConfig, ShardsConfig
from scaletrain.data import BatchLoader, build_data


def address_space_mib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize"):
                return int(line.split()[1]) >> 10
    raise AssertionError("no VmSize in /proc/self/status")


def main() -> None:
    root, headroom_mib, num_workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    cfg = DataConfig(
        source="shards", path=root, shards=ShardsConfig(verify="size", max_open=2, read_mib=4)
    )
    bundle = build_data(cfg, seed=0)
    width = bundle.spec.input_shape[0]
    model = torch.nn.Sequential(torch.nn.Linear(width, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    # Warm up allocator and autograd, so the limit measures data, not first-call setup.
    torch.nn.functional.cross_entropy(
        model(torch.zeros(64, width)), torch.zeros(64).long()
    ).backward()
    limit_mib = address_space_mib() + headroom_mib
    resource.setrlimit(resource.RLIMIT_AS, (limit_mib << 20, limit_mib << 20))
    try:
        np.ones((2 * headroom_mib) << 17)  # 2x the headroom in float64: must fail
        control = "allocated"
    except MemoryError:
        control = "MemoryError"
    loader = BatchLoader(
        bundle.train,
        global_batch_size=64,
        micro_batch_size=64,
        shuffle=True,
        seed=0,
        drop_last=False,
        num_workers=num_workers,
    )
    seen = 0
    for step in loader:
        for inputs, targets in step.micro_batches:
            optimizer.zero_grad()
            # the loader already scaled the batch (Split.transform) on its way to the device
            loss = torch.nn.functional.cross_entropy(model(inputs), targets)
            loss.backward()
            optimizer.step()
            seen += len(targets)
    print(
        json.dumps(
            {
                "limit_mib": limit_mib,
                "control": control,
                "samples": seen,
                "peak_mib": address_space_mib(),
                "loss": float(loss),
            }
        )
    )


if __name__ == "__main__":
    main()
