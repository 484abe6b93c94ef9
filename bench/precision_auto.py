"""Where bf16 autocast pays on a CPU: scaletrain's training step in fp32 and in bf16-mixed for
MLPs and built-in configs of several sizes, beside what `train.precision: auto` picks for each.

The threshold in `src/scaletrain/train/precision.py` (`CPU_BF16_MIN_LAYER_FLOPS`: forward
FLOPs per Linear/conv/RNN layer and step) comes from these figures: below it the casts around
each small product cost more than bf16's faster products save. Each (workload, precision) runs
in a fresh process, precisions alternating, for `--repeats` rounds; ms/step is the median epoch
over its steps (epochs 2 on, validation included for the configs). Meaningful only on a CPU
with AVX512-BF16 or AMX (elsewhere `auto` is fp32 whatever the size).
Run: `python -m bench.precision_auto [--repeats 2] [--epochs 6]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

from bench.results import save_results

# (name, d_in, width, hidden layers, batch) for synthetic MLPs; configs by path
MLPS = [
    ("mlp 64-256x2 b64 (digits MLP)", 64, 256, 2, 64),
    ("mlp 784-128x2 b64", 784, 128, 2, 64),
    ("mlp 784-256x2 b64", 784, 256, 2, 64),
    ("mlp 256-256x4 b128", 256, 256, 4, 128),
    ("mlp 784-512x2 b64", 784, 512, 2, 64),
    ("mlp 64-1024x2 b64", 64, 1024, 2, 64),
    ("mlp 784-1024x2 b256", 784, 1024, 2, 256),
]
CONFIGS = [
    "configs/default.yaml",
    "configs/resnet-digits.yaml",
    "configs/distill-teacher-digits.yaml",
]


class EpochClock:
    def __init__(self):
        self.ends: list[float] = []

    def on_epoch_end(self, state) -> None:
        self.ends.append(time.perf_counter())

    def median_epoch(self) -> float:
        return statistics.median(b - a for a, b in zip(self.ends, self.ends[1:], strict=False))


def _child(workload: str, precision: str, epochs: int) -> dict:
    import numpy as np
    from torch import nn

    import scaletrain
    from scaletrain.models import forward_flops_per_layer

    clock = EpochClock()
    quiet = ["log.progress=false", "log.report=false", "log.tensorboard=false"]
    with tempfile.TemporaryDirectory() as out:
        if workload.endswith(".yaml"):
            overrides = [f"train.precision={precision}", f"run.out_dir={out}", *quiet]
            run = scaletrain.train(
                workload,
                overrides=[*overrides, f"train.max_epochs={epochs}"],
                callbacks=[clock],
                overwrite=True,
            )
        else:
            _, d_in, width, depth, batch = next(m for m in MLPS if m[0] == workload)
            rng = np.random.default_rng(0)
            inputs = rng.normal(size=(4096, d_in)).astype(np.float32)
            widths = [d_in, *[width] * depth]
            pairs = zip(widths, widths[1:], strict=False)
            layers = [m for a, b in pairs for m in (nn.Linear(a, b), nn.ReLU())]
            cfg = {
                "run": {"name": "precision", "out_dir": out},
                "train": {"max_epochs": epochs, "batch_size": batch, "precision": precision},
                "log": {"progress": False, "tensorboard": False, "report": False},
                "checkpoint": {"every_epochs": 0, "save_best": False},
                "data": {"val_fraction": 0.0, "test_fraction": 0.0},
            }
            model = nn.Sequential(*layers, nn.Linear(width, 10))
            data = {"train": (inputs, rng.integers(0, 10, 4096))}
            run = scaletrain.train(cfg, model=model, data=data, callbacks=[clock], overwrite=True)
        steps = run.steps / epochs
        spec, _ = run.spec_and_preprocessor()
        per_layer = forward_flops_per_layer(run.model, spec.input_shape, spec.input_dtype)
        run.wait()
    batch = run.config.train.batch_size
    return {
        "ms_per_step": clock.median_epoch() / steps * 1e3,
        "mflop_per_layer_step": per_layer * batch / 1e6 if per_layer else None,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        workload, precision = args.child.rsplit(":", 1)
        print(json.dumps(_child(workload, precision, args.epochs)))
        return []
    rows = []
    for workload in [m[0] for m in MLPS] + CONFIGS:
        times: dict[str, list[float]] = {"32": [], "bf16-mixed": []}
        for _ in range(args.repeats):
            for precision in times:
                command = [sys.executable, "-m", "bench.precision_auto", "--child"]
                command += [f"{workload}:{precision}", "--epochs", str(args.epochs)]
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                times[precision].append(result["ms_per_step"])
        fp32, bf16 = (statistics.median(times[p]) for p in times)
        row = {
            "workload": workload,
            "mflop_per_layer_step": result["mflop_per_layer_step"],
            "fp32_ms": fp32,
            "bf16_ms": bf16,
            "bf16_over_fp32": bf16 / fp32,
            "auto": _auto(result["mflop_per_layer_step"]),
        }
        rows.append(row)
        print(
            f"{workload:40s} {row['mflop_per_layer_step']:8.1f} MFLOP/layer/step  fp32 "
            f"{fp32:7.3f} ms  bf16 {bf16:7.3f} ms  ratio {bf16 / fp32:5.2f}  auto -> {row['auto']}",
            flush=True,
        )
    save_results("precision_auto", rows)
    return rows


def _auto(mflop: float | None) -> str:
    import torch

    from scaletrain.train.precision import Precision

    flops = None if mflop is None else mflop * 1e6
    return Precision.from_config("auto", torch.device("cpu"), layer_flops=lambda: flops).name


if __name__ == "__main__":
    main()
