"""Ensemble members in parallel vs one after another: wall time of K = 2 and 4 members with
`nproc` = K (capped at the cores) vs 1, and member vs ensemble accuracy (issue 17).

    .venv/bin/python -m bench.ensemble_parallel [--members 2 4] [--epochs 3] [--repeats 1]

Each configuration runs in a fresh directory; sides alternate (sequential, parallel, ...) so a
load change on a shared machine hits both.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from bench.results import save_results


def _config(out: Path, name: str, *, members: int, epochs: int) -> dict:
    return {
        "run": {"name": name, "seed": 0, "out_dir": str(out)},
        "data": {"source": "builtin", "name": "digits"},
        "model": {"name": "mlp", "hidden": [64]},
        "optim": {"name": "adamw", "lr": 0.003},
        "train": {"max_epochs": epochs, "batch_size": 64, "precision": "32", "num_threads": 1},
        "checkpoint": {"every_epochs": 0},
        "log": {"progress": False, "tensorboard": False, "report": False},
        "ensemble": {"method": "bagging", "members": members},
    }


def _timed(out: Path, name: str, *, members: int, epochs: int, nproc: int) -> dict:
    import scaletrain

    start = time.perf_counter()
    run = scaletrain.train(_config(out, name, members=members, epochs=epochs), nproc=nproc)
    wall = time.perf_counter() - start
    summary = json.loads((run.run_dir / "summary.json").read_text())
    return {
        "members": members,
        "nproc": nproc,
        "wall_s": round(wall, 2),
        "train_wall_s": summary["train_wall_s"],
        "ensemble_accuracy": summary["ensemble"]["test"]["accuracy"],
        "mean_member_accuracy": summary["mean_member"]["test"]["accuracy"],
        "disagreement": summary["diversity"]["test"]["disagreement"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for members in args.members:
            for repeat in range(args.repeats):
                for nproc in (1, min(members, cores)):
                    name = f"k{members}-p{nproc}-r{repeat}"
                    row = _timed(Path(tmp), name, members=members, epochs=args.epochs, nproc=nproc)
                    rows.append(row)
                    print(row, flush=True)
    for members in args.members:
        sequential = [
            r["train_wall_s"] for r in rows if r["members"] == members and r["nproc"] == 1
        ]
        parallel = [r["train_wall_s"] for r in rows if r["members"] == members and r["nproc"] > 1]
        ratio = min(parallel) / min(sequential)
        print(f"K={members}: parallel / sequential training wall time = {ratio:.2f}")
    save_results("ensemble_parallel", rows)


if __name__ == "__main__":
    main()
