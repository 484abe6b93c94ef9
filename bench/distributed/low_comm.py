"""Time to accuracy and bytes communicated: ddp vs local_sgd vs diloco, 3 gloo processes.

Each workload trains once per strategy, every run a full `scaletrain` run (validation every
epoch, no checkpoints) in one torchrun job of `--nproc` processes. Per run: the first
validation step and time (`time_s` of metrics.jsonl, so validation is included) at which
the accuracy reached the target (`target` × DDP's best validation accuracy), the final test
accuracy, `comm_bytes_per_step` and the bytes each rank handed to collectives in the run.

    python -m bench.distributed.low_comm [--nproc 3] [--workloads digits,synthetic] [--quick]

Results go to bench/results/low_comm.json (see bench/distributed/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[2]
RESULTS = ROOT / "bench" / "results" / "low_comm.json"
STRATEGIES = {
    "ddp": ["parallel.strategy=ddp"],
    "local_sgd_h8": ["parallel.strategy=local_sgd", "parallel.local.steps=8"],
    "diloco_h8": ["parallel.strategy=diloco", "parallel.local.steps=8"],
    "diloco_h32": ["parallel.strategy=diloco", "parallel.local.steps=32"],
}
BASE = {
    "run": {"seed": 0},
    "optim": {"name": "adamw", "lr": 0.003},
    "train": {"batch_size": 96, "precision": "32", "device": "cpu"},  # 96: 32 per rank
    "checkpoint": {"every_epochs": 0, "save_best": False, "every_minutes": None},
    "log": {"progress": False, "tensorboard": False, "report": False, "every_steps": 50},
}
WORKLOADS = {
    "digits": {
        "data": {"source": "builtin", "name": "digits"},
        "model": {"name": "mlp", "hidden": [64]},
    },
    # 8,000 samples of 256 features, 10 classes: a larger MLP (≈ 0.4 M parameters)
    "synthetic": {"model": {"name": "mlp", "hidden": [512, 512]}},
}
EPOCHS = {"digits": 30, "synthetic": 12}


def synthetic_data():
    from sklearn.datasets import make_classification

    inputs, labels = make_classification(
        n_samples=8000, n_features=256, n_informative=64, n_classes=10, random_state=0
    )
    return {"train": (inputs.astype("float32"), labels)}


def worker(out: str, workload: str, epochs: int) -> None:
    """In each torchrun process: train the workload once per strategy."""
    from scaletrain import api

    config = {**BASE, **WORKLOADS[workload]}
    config["train"] = {**config["train"], "max_epochs": epochs}
    data = synthetic_data() if workload == "synthetic" else None
    for name, overrides in STRATEGIES.items():
        config["run"] = {"seed": 0, "name": name, "out_dir": out}
        api.train(config, data=data, overrides=overrides, overwrite=True)


def measure(run_dir: Path, target: float) -> dict:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    validations = [r for r in records if r.get("split") == "val"]
    reached = next((r for r in validations if r["metrics"]["accuracy"] >= target), None)
    per_step = summary["comm_bytes_per_step"]
    return {
        "steps": summary["steps"],
        "wall_s": summary["wall_s"],
        "best_val_accuracy": max(r["metrics"]["accuracy"] for r in validations),
        "test_accuracy": summary["metrics"]["test"]["accuracy"],
        "target_reached_at_step": reached["step"] if reached else None,
        "time_to_target_s": reached["time_s"] if reached else None,
        "comm_bytes_per_step": per_step,
        "comm_mb_total": per_step * summary["steps"] / 1e6,
    }


def run_workload(workload: str, *, nproc: int, epochs: int, target: float) -> dict:
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}",
            "-m", "bench.distributed.low_comm", "--worker", out, workload, str(epochs),
        ]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(command, check=True, cwd=ROOT, env=_env())
        print(f"{workload}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
        ddp_best = measure(Path(out) / "ddp", 0.0)["best_val_accuracy"]
        return {name: measure(Path(out) / name, target * ddp_best) for name in STRATEGIES} | {
            "target_accuracy": target * ddp_best
        }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _env() -> dict:
    src = str(ROOT / "src")
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{src}:{ROOT}"}


def print_table(results: dict) -> None:
    print("| workload | strategy | steps | best val acc | test acc | step / s to target | "
          "bytes per step | MB per rank | wall s |")  # fmt: skip
    print("|---|---|---:|---:|---:|---|---:|---:|---:|")
    for workload, runs in results["workloads"].items():
        for name in STRATEGIES:
            r = runs[name]
            reach = (
                f"{r['target_reached_at_step']} / {r['time_to_target_s']:.1f}"
                if r["time_to_target_s"] is not None
                else "not reached"
            )
            print(
                f"| {workload} | {name} | {r['steps']} | {r['best_val_accuracy']:.3f} | "
                f"{r['test_accuracy']:.3f} | {reach} | {r['comm_bytes_per_step']:,.0f} | "
                f"{r['comm_mb_total']:.1f} | {r['wall_s']:.1f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--nproc", type=int, default=3)
    parser.add_argument("--workloads", default="digits,synthetic")
    parser.add_argument("--target", type=float, default=0.99, help="x DDP's best val accuracy")
    parser.add_argument("--quick", action="store_true", help="a third of the epochs")
    args = parser.parse_args()
    if args.worker:
        out, workload, epochs = args.worker
        worker(out, workload, int(epochs))
        return
    results = {
        "machine": {"python": platform.python_version(), "processor": platform.processor()},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": args.nproc,
        "workloads": {},
    }
    for workload in args.workloads.split(","):
        epochs = max(1, EPOCHS[workload] // 3) if args.quick else EPOCHS[workload]
        results["workloads"][workload] = run_workload(
            workload, nproc=args.nproc, epochs=epochs, target=args.target
        )
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)


if __name__ == "__main__":
    main()
