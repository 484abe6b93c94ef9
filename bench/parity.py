"""Parity: scaletrain vs the hand-written loop on the same work, alternating A B A B.

Each side runs in its own fresh process (so peak RSS is its own) and reports its median step
time after warm-up; fp32 final weights are compared bit for bit. Run:
`python -m bench.parity [--quick] [--device cuda] [--threads N]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bench.results import save_results


@dataclass
class Workload:
    name: str
    build: callable
    input_shape: tuple[int, ...]
    batch_size: int
    steps: int
    num_classes: int = 10
    num_samples: int = 8192


def _mlp(widths: list[int]) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def _digits_cnn() -> nn.Module:
    """The default config's CNN (configs/default.yaml), dropout off so fp32 runs compare."""
    from scaletrain.config import CNNConfig
    from scaletrain.models import build_model

    cfg = CNNConfig(channels=[32, 64], head=[128], dropout=0.0)
    return build_model(cfg, input_shape=(1, 8, 8), num_outputs=10)


WORKLOADS = [
    Workload("mlp-784-1024-1024-10", lambda: _mlp([784, 1024, 1024, 10]), (784,), 256, 240),
    Workload("digits-cnn", _digits_cnn, (1, 8, 8), 64, 240),
    # ~50M parameters: 1024*4096 + 2*4096*4096 + 4096*1024 + ... = 41.9M + 8.4M
    Workload("mlp-50M", lambda: _mlp([1024, 4096, 4096, 4096, 1024, 10]), (1024,), 64, 60),
]


def synthetic(workload: Workload, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(workload.num_samples, *workload.input_shape, generator=generator)
    targets = torch.randint(0, workload.num_classes, (workload.num_samples,), generator=generator)
    return inputs.to(device), targets.to(device)


class StepTimer:
    """Wall time between consecutive optimizer steps, from scaletrain's on_step_end event."""

    def __init__(self, device: str = "cpu"):
        self.seconds: list[float] = []
        self._last: float | None = None
        self._sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def on_step_end(self, state) -> None:
        self._sync()
        now = time.perf_counter()
        if self._last is not None:
            self.seconds.append(now - self._last)
        self._last = now


def _run_side(args) -> None:
    """Child process: train one side, print its figures as JSON, save fp32 weights."""
    from bench.raw_loop import raw_train, scaletrain_config
    from scaletrain.metrics import peak_rss_mb

    torch.set_num_threads(args.threads)
    workload = next(w for w in WORKLOADS if w.name == args.workload)
    # raw gets device tensors; scaletrain gets CPU tensors and moves them once (its feature)
    inputs, targets = synthetic(workload, args.device if args.side == "raw" else "cpu")
    torch.manual_seed(0)
    model = workload.build()
    started = time.perf_counter()
    if args.side == "raw":
        # the same memory format scaletrain's `train.channels_last: auto` picks
        channels_last = args.device == "cpu" and any(
            isinstance(module, nn.Conv2d) for module in model.modules()
        )
        result = raw_train(
            model,
            inputs,
            targets,
            steps=args.steps,
            lr=1e-3,
            batch_size=workload.batch_size,
            bf16=args.precision == "bf16-mixed",
            channels_last=channels_last,
        )
        model, seconds, mfu = result.model, result.step_seconds, None
    else:
        import scaletrain

        timer = StepTimer(args.device)
        with tempfile.TemporaryDirectory() as out:
            cfg = scaletrain_config(
                name="parity",
                out_dir=out,
                steps=args.steps,
                lr=1e-3,
                batch_size=workload.batch_size,
                precision=args.precision,
                device=args.device,
                guard=args.guard,
            )
            run = scaletrain.train(
                cfg, model=model, data={"train": (inputs, targets)}, callbacks=[timer]
            )
            summary = json.loads((run.run_dir / "summary.json").read_text())
            getattr(run, "wait", lambda: None)()  # the background report, before the folder goes
        # on_step_end deltas start at step 2: pad so warm-up trims the same steps on both sides
        model, seconds, mfu = run.model, [float("nan"), *timer.seconds], summary["mfu"]
    total = time.perf_counter() - started
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, args.weights)
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else None
    print(
        json.dumps(
            {
                "seconds": seconds,
                "total_s": total,
                "peak_rss_mb": peak_rss_mb(),
                "peak_gpu_mb": peak_gpu,
                "mfu": mfu,
            }
        )
    )


def run_pair(
    workload: Workload,
    *,
    precision: str,
    repeats: int,
    device: str,
    threads: int,
    steps: int,
    guard: str = "off",
) -> dict:
    """A B A B over fresh processes; medians of the pooled post-warm-up step times."""
    warmup = max(5, min(20, steps // 5))
    times: dict[str, list[float]] = {"raw": [], "scaletrain": []}
    last: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            for side in times:
                weights = Path(tmp) / f"{side}.pt"
                command = [
                    sys.executable,
                    "-m",
                    "bench.parity",
                    "--side",
                    side,
                    "--workload",
                    workload.name,
                    "--precision",
                    precision,
                    "--device",
                    device,
                    "--threads",
                    str(threads),
                    "--steps",
                    str(steps),
                    "--weights",
                    str(weights),
                    "--guard",
                    guard,
                ]
                output = subprocess.run(command, capture_output=True, text=True)
                if output.returncode:
                    raise RuntimeError(f"{side} failed:\n{output.stderr[-3000:]}")
                last[side] = json.loads(output.stdout.strip().splitlines()[-1])
                times[side] += last[side]["seconds"][warmup:]
        raw_w, ours_w = (torch.load(Path(tmp) / f"{s}.pt", weights_only=True) for s in times)
        equal = (
            all(torch.equal(raw_w[k], ours_w[k]) for k in raw_w) and raw_w.keys() == ours_w.keys()
        )
    raw_median, ours_median = (statistics.median(v) for v in times.values())
    return {
        "workload": workload.name,
        "precision": precision,
        "guard": guard,
        "device": device,
        "threads": threads,
        "steps_per_run": steps,
        "warmup_steps": warmup,
        "steps_timed_per_side": len(times["raw"]),
        "repeats": repeats,
        "raw_step_ms": raw_median * 1e3,
        "scaletrain_step_ms": ours_median * 1e3,
        "ratio": ours_median / raw_median,
        "bitwise_equal": equal,
        "raw_peak_rss_mb": last["raw"]["peak_rss_mb"],
        "scaletrain_peak_rss_mb": last["scaletrain"]["peak_rss_mb"],
        "raw_peak_gpu_mb": last["raw"]["peak_gpu_mb"],
        "scaletrain_peak_gpu_mb": last["scaletrain"]["peak_gpu_mb"],
        "scaletrain_mfu": last["scaletrain"]["mfu"],
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="Fewer steps (smoke run).")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--workloads", nargs="*", default=[w.name for w in WORKLOADS])
    parser.add_argument("--precisions", nargs="*", default=["32", "bf16-mixed"])
    parser.add_argument(
        "--guard",
        default="off",
        choices=["off", "skip"],
        help="scaletrain's train.guard.nonfinite: `off` is the raw loop's work (parity); "
        "`skip`, the default, adds a finite check of loss and gradient norm per step.",
    )
    for hidden in ("--side", "--workload", "--precision", "--steps", "--weights"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    return parser


def _steps(workload: Workload, precision: str, args, slow_bf16: bool) -> int:
    steps = max(30, workload.steps // 5) if args.quick else workload.steps
    if precision == "bf16-mixed" and slow_bf16:  # emulated bf16 matmuls: ~50x slower
        steps = max(25, steps // 8)
    return steps


def main(argv: list[str] | None = None) -> list[dict]:
    args = _parser().parse_args(argv)
    if args.side:
        args.steps = int(args.steps)
        _run_side(args)
        return []
    from scaletrain.train.precision import has_fast_bf16

    slow_bf16 = not has_fast_bf16(torch.device(args.device))
    if slow_bf16 and "bf16-mixed" in args.precisions:
        print(
            "note: no fast bf16 on this device (emulated bf16 matmuls); bf16-mixed runs "
            "use 1/8 of the steps"
        )
    rows = []
    for workload in (w for w in WORKLOADS if w.name in args.workloads):
        for precision in args.precisions:
            if precision == "bf16-mixed" and slow_bf16 and workload.name == "mlp-50M":
                print(
                    f"{workload.name:<22} {precision:<10} skipped: emulated bf16 would take "
                    "hours at this size"
                )
                continue
            steps = _steps(workload, precision, args, slow_bf16)
            row = run_pair(
                workload,
                precision=precision,
                repeats=args.repeats,
                device=args.device,
                threads=args.threads,
                steps=steps,
                guard=args.guard,
            )
            rows.append(row)
            mfu = row["scaletrain_mfu"]
            print(
                f"{row['workload']:<22} {precision:<10} raw {row['raw_step_ms']:9.2f} ms  "
                f"scaletrain {row['scaletrain_step_ms']:9.2f} ms  ratio {row['ratio']:.3f}  "
                f"bitwise {row['bitwise_equal']}  mfu {mfu if mfu is None else round(mfu, 3)}",
                flush=True,
            )
    save_results(f"parity_{args.device}" + ("" if args.guard == "off" else "_guard"), rows)
    return rows


if __name__ == "__main__":
    main()
