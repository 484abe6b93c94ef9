"""Training throughput from prepared shards vs the same data in memory, per config.

For each config: `prepare` its data into a temporary shard folder, then train it in memory,
from shards (`data.num_workers` auto) and from shards with one loader thread, in rounds
(the three one after another, --repeats times, so the machine's drift hits all alike), best
round each, and compare the loop's train_samples_per_s (summary.json). Goal: shards within
5 % of in-memory.

    python -m bench.data.training_throughput [configs/default.yaml ...] [--epochs 5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from scaletrain import api
from scaletrain.config import load_config
from scaletrain.data.shards import prepare_shards


def samples_per_s(config: str, overrides: list[str], out: Path, name: str) -> float:
    run = api.train(
        config, overrides=[*overrides, f"run.out_dir={out}", f"run.name={name}"], overwrite=True
    )
    return json.loads((run.run_dir / "summary.json").read_text())["train_samples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", default=["configs/default.yaml"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    common = [
        f"train.max_epochs={args.epochs}",
        "log.progress=false",
        "log.report=false",
        "log.tensorboard=false",
        "checkpoint.every_epochs=0",
        "checkpoint.save_best=false",
    ]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for config in args.configs:
        cfg = load_config(config)
        with tempfile.TemporaryDirectory() as folder:
            shards = Path(folder) / "prepared"
            prepare_shards(cfg.data, shards, seed=cfg.run.seed, shard_bytes=64 << 20)
            from_shards = [*common, "data.source=shards", f"data.path={shards}"]
            variants = {
                "in-memory": common,
                "shards": from_shards,
                "shards, 1 worker": [*from_shards, "data.num_workers=1"],
            }
            rates: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.repeats):
                for index, (name, overrides) in enumerate(variants.items()):
                    rates[name].append(samples_per_s(config, overrides, Path(folder), f"v{index}"))
        best = {name: max(values) for name, values in rates.items()}
        memory = best["in-memory"]
        print(
            f"{config} on {device}: "
            + "; ".join(
                f"{name} {rate:,.0f} samples/s ({rate / memory:.1%})" for name, rate in best.items()
            )
        )


if __name__ == "__main__":
    main()
