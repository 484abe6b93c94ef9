"""Train one epoch from shards several times larger than the process may hold, under RLIMIT_AS.

Writes --gib of shards (float32 rows of 16 KiB), then runs tests/unit/data/
bounded_memory_worker.py: after setup it caps its whole address space (RLIMIT_AS) at its
current size plus --headroom-mib and trains an MLP for one epoch over every sample.

    python -m bench.data.bounded_memory [--gib 4.5] [--headroom-mib 64] [--workers 0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from scaletrain.data.shards import SampleShardWriter, write_manifest

WIDTH = 4096
WORKER = Path(__file__).parents[2] / "tests/unit/data/bounded_memory_worker.py"


def write(root: Path, num_rows: int) -> None:
    fields = {
        "inputs": {"dtype": "float32", "shape": [WIDTH]},
        "targets": {"dtype": "int64", "shape": []},
    }
    writer = SampleShardWriter(
        root, "train", fields=fields, shard_bytes=16 << 20
    )  # 2 mapped at a time: 32 MiB
    generator = np.random.default_rng(0)
    for start in range(0, num_rows, 4096):
        inputs = generator.standard_normal((min(4096, num_rows - start), WIDTH), dtype=np.float32)
        writer.append(inputs=inputs, targets=(inputs[:, 0] > 0).astype(np.int64))
    spec = {
        "task": "classification",
        "input_shape": [WIDTH],
        "input_dtype": "float32",
        "num_outputs": 2,
        "class_names": ["0", "1"],
        "class_counts": None,
        "vocab_size": None,
        "is_image": False,
        "input_kind": "array",
        "raw_columns": None,
    }
    write_manifest(
        root,
        {
            "kind": "samples",
            "spec": spec,
            "fields": fields,
            "splits": {"train": writer.close()},
            "statistics": {"count": 0},
            "encoder": None,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=4.5)
    parser.add_argument("--headroom-mib", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=".") as folder:
        num_rows = int(args.gib * 2**30) // (WIDTH * 4)
        began = time.perf_counter()
        write(Path(folder), num_rows)
        written = time.perf_counter() - began
        data_mib = sum(p.stat().st_size for p in Path(folder).rglob("*.npy")) >> 20
        began = time.perf_counter()
        result = subprocess.run(
            [sys.executable, str(WORKER), folder, str(args.headroom_mib), str(args.workers)],
            capture_output=True,
            text=True,
        )
        trained = time.perf_counter() - began
    if result.returncode:
        sys.exit(result.stderr[-2000:])
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(
        json.dumps(
            {
                **report,
                "dataset_mib": data_mib,
                "dataset_over_limit": round(data_mib / report["limit_mib"], 2),
                "write_s": round(written, 1),
                "train_s": round(trained, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
