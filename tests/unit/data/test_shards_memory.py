"""Bounded memory: training streams a dataset 4x larger than the memory it may use.

A subprocess measures its address space after setup, then caps it (RLIMIT_AS) at that plus
a headroom of 64 MiB and trains one epoch over 256 MiB of shards. Holding the data, or even
mapping it all at once, would exceed the cap; the memory-mapped loader keeps at most two
16 MiB shards mapped. A control allocation of twice the headroom must fail under the cap.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.data.bounded_memory import WIDTH, write  # float32 features: 16 KiB per sample

HEADROOM_MIB = 64
DATASET_MIB = 4 * HEADROOM_MIB


def write_big_shards(root: Path) -> int:
    """DATASET_MIB of random samples written chunk by chunk (never all in memory)."""
    num_rows = (DATASET_MIB << 20) // (WIDTH * 4)
    write(root, num_rows)  # the bench's writer: the same shards, 16 MiB each
    return num_rows


def test_training_from_shards_4x_larger_than_the_memory_limit(tmp_path):
    num_rows = write_big_shards(tmp_path / "big")
    data_bytes = sum(p.stat().st_size for p in (tmp_path / "big").rglob("*.npy"))
    assert data_bytes >= 4 * (HEADROOM_MIB << 20)
    worker = Path(__file__).with_name("bounded_memory_worker.py")
    result = subprocess.run(
        [sys.executable, str(worker), str(tmp_path / "big"), str(HEADROOM_MIB), "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["control"] == "MemoryError"  # the cap really binds
    assert report["samples"] == num_rows  # one full epoch, every sample
    assert report["peak_mib"] <= report["limit_mib"]
