"""Boosting variants side by side (issue 17): SAMME with its weights fed to the loss vs by
resampling vs SAMME.R on digits, and gradient boosting on residuals on diabetes; test
accuracy (R2) of the boosted ensemble against its first member, per seed.

    .venv/bin/python -m bench.boosting_variants [--seeds 0 1 2] [--members 5] [--epochs 2]

Each variant is one `scaletrain.train` call in this process (members one after another, as
boosting always runs); `train.num_threads: 1`, fp32, MLP with one hidden layer of 16.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import scaletrain
from bench.results import save_results

VARIANTS = {  # name -> (data, boosting options)
    "samme_loss": ("digits", {"algorithm": "samme", "weights": "loss"}),
    "samme_resample": ("digits", {"algorithm": "samme", "weights": "resample"}),
    "samme_r_loss": ("digits", {"algorithm": "samme_r", "weights": "loss"}),
    "gradient_lr0.5": ("diabetes", {"learning_rate": 0.5}),
    "gradient_lr0.2": ("diabetes", {"learning_rate": 0.2}),
}


def _config(out: Path, name: str, *, data: str, boosting: dict, seed: int, args) -> dict:
    epochs = args.epochs if data == "digits" else args.regression_epochs
    return {
        "run": {"name": name, "seed": seed, "out_dir": str(out)},
        "data": {"source": "builtin", "name": data},
        "model": {"name": "mlp", "hidden": [16]},
        "optim": {"name": "adamw", "lr": 0.01},
        "train": {"max_epochs": epochs, "batch_size": 64, "precision": "32", "num_threads": 1},
        "log": {"progress": False, "tensorboard": False, "report": False},
        "ensemble": {"method": "boosting", "members": args.members, "boosting": boosting},
    }


def _row(run, variant: str, seed: int, seconds: float) -> dict:
    summary = json.loads((run.run_dir / "summary.json").read_text())
    record = json.loads((run.run_dir / "ensemble.json").read_text())
    metric = "accuracy" if "accuracy" in summary["ensemble"]["test"] else "r2"
    return {
        "variant": variant,
        "seed": seed,
        "metric": metric,
        "ensemble": round(summary["ensemble"]["test"][metric], 4),
        "first_member": round(summary["members"][0]["test"][metric], 4),
        "rounds": record.get("rounds"),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--regression-epochs", type=int, default=5)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            for variant in args.variants:
                data, boosting = VARIANTS[variant]
                cfg = _config(
                    Path(folder), f"{variant}_{seed}", data=data, boosting=boosting, seed=seed,
                    args=args,
                )  # fmt: skip
                start = time.perf_counter()
                run = scaletrain.train(cfg)
                rows.append(_row(run, variant, seed, time.perf_counter() - start))
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "rounds"}))
    save_results("boosting_variants", rows)


if __name__ == "__main__":
    main()
