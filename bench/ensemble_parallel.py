"""Ensemble members in parallel vs one after another: wall time of K = 2 and 4 members with
`nproc` = K (capped at the cores) vs 1, and member vs ensemble accuracy (issue 17).

    .venv/bin/python -m bench.ensemble_parallel [--members 2 4] [--epochs 3] [--repeats 1]

Both sides run as the user runs them, `scaletrain train CONFIG --nproc N` in a fresh process
(a parallel worker pays its interpreter's start-up and first-run costs, as the sequential
process does once), each in a fresh directory; sides alternate so a load change on a shared
machine hits both. `--hidden` and `--epochs` size the members: parallelism only pays once a
member trains for longer than a worker takes to start.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.results import save_results


def _config(out: Path, name: str, *, members: int, epochs: int, hidden: list[int]) -> dict:
    return {
        "run": {"name": name, "seed": 0, "out_dir": str(out)},
        "data": {"source": "builtin", "name": "digits"},
        "model": {"name": "mlp", "hidden": hidden},
        "optim": {"name": "adamw", "lr": 0.003},
        "train": {"max_epochs": epochs, "batch_size": 64, "precision": "32", "num_threads": 1},
        "checkpoint": {"every_epochs": 0},
        "log": {"progress": False, "tensorboard": False, "report": False},
        "ensemble": {"method": "bagging", "members": members},
    }


def _timed(out: Path, name: str, *, nproc: int, **sizes) -> dict:
    config = out / f"{name}.yaml"
    config.write_text(yaml.safe_dump(_config(out, name, **sizes)))
    command = [sys.executable, "-m", "scaletrain", "train", str(config), "--nproc", str(nproc)]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - start
    summary = json.loads((out / name / "summary.json").read_text())
    return {
        "members": sizes["members"],
        "nproc": nproc,
        "wall_s": round(wall, 2),  # the whole command, start-up and evaluation included
        "train_wall_s": summary["train_wall_s"],  # members' training (workers' start-up too)
        "ensemble_accuracy": summary["ensemble"]["test"]["accuracy"],
        "mean_member_accuracy": summary["mean_member"]["test"]["accuracy"],
        "disagreement": summary["diversity"]["test"]["disagreement"],
        "load_1min": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for members in args.members:
            for repeat in range(args.repeats):
                for nproc in (1, min(members, cores)):
                    name = f"k{members}-p{nproc}-r{repeat}"
                    sizes = {"members": members, "epochs": args.epochs, "hidden": args.hidden}
                    row = _timed(Path(tmp), name, nproc=nproc, **sizes)
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
