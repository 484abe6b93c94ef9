"""Subprocess of test_ps_larger_than_memory.py: Adam updates of shards under RLIMIT_AS.

argv: shards dir, headroom MiB, updates, window MiB. The store was created by the parent;
this process caps its address space at its own size after setup plus the headroom, shows
that the cap bites (a plain allocation and an unwindowed store both fail), then applies the
updates through a windowed store and closes it (a commit). Prints one JSON line.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
from pathlib import Path

import torch
from store_rlimit_params import grads_for, make_optimizer, meta_params

from scaletrain.parallel.ps import ShardStore


def status_mib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) >> 10
    raise AssertionError(f"no {field} in /proc/self/status")


def open_store(root: str, window_mb: float | None) -> ShardStore:
    return ShardStore(
        meta_params(),
        make_optimizer=make_optimizer,
        shards_dir=root,
        server=0,
        resume=True,
        flush_every=1,  # a commit per update: both slots fill, CoW and fsync under the cap
        window_mb=window_mb,
    )


def unwindowed_update(root: str) -> str:
    """An unwindowed store maps every file whole: under the cap its first update fails."""
    store = open_store(root, None)
    try:
        store.apply(grads_for(store.version + 1))
        return "updated"
    except (OSError, MemoryError, RuntimeError) as error:
        return type(error).__name__
    finally:
        store.close()  # after a failed update: unmaps, commits nothing
        del store
        gc.collect()


def main() -> None:
    root, headroom_mib, updates, window_mb = (
        sys.argv[1],
        int(sys.argv[2]),
        int(sys.argv[3]),
        float(sys.argv[4]),
    )
    torch.set_num_threads(1)
    warm = torch.zeros(4096, requires_grad=True)  # first-call setup of autograd and Adam
    warm.grad = torch.ones(4096)
    make_optimizer([warm]).step()
    baseline = status_mib("VmSize")
    limit = baseline + headroom_mib
    resource.setrlimit(resource.RLIMIT_AS, (limit << 20, limit << 20))
    try:
        bytearray((2 * headroom_mib) << 20)
        control_alloc = "allocated"
    except MemoryError:
        control_alloc = "MemoryError"
    control_unwindowed = unwindowed_update(root)
    store = open_store(root, window_mb)
    start = store.version
    for _ in range(updates):
        store.apply(grads_for(store.version + 1))
    store.close()
    files = sum(path.stat().st_size for path in Path(root).rglob("*.bin")) >> 20
    print(
        json.dumps(
            {
                "baseline_mib": baseline,
                "limit_mib": limit,
                "files_mib": files,
                "control_alloc": control_alloc,
                "control_unwindowed": control_unwindowed,
                "start_version": start,
                "version": store.version,
                "peak_mib": status_mib("VmPeak"),
            }
        )
    )


if __name__ == "__main__":
    main()
