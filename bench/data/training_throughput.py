"""Training throughput from prepared shards vs the same data in memory, per config.

For each config: `prepare` its data into a temporary shard folder, then train it twice
(in memory, and with data.source=shards), best of --repeats each, and compare the loop's
train_samples_per_s (summary.json). Goal: shards within 5 % of in-memory.

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
    parser.add_argument("--repeats", type=int, default=2)
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
            memory = max(
                samples_per_s(config, common, Path(folder), "memory") for _ in range(args.repeats)
            )
            sharded = max(
                samples_per_s(config, from_shards, Path(folder), "shards")
                for _ in range(args.repeats)
            )
        print(
            f"{config} on {device}: in-memory {memory:,.0f} samples/s, shards "
            f"{sharded:,.0f} samples/s ({sharded / memory:.1%} of in-memory)"
        )


if __name__ == "__main__":
    main()
