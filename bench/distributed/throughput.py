"""Training-step throughput and per-rank peak memory: 1 process x 2 threads vs 2 x 1.

For each model (the default digits MLP and CNN, and a ~50M-parameter MLP) it times the
training step (forward, backward, AdamW step; synthetic data, no eval or checkpoints)
under `single` with 2 threads, then `ddp` and `fsdp` with 2 processes of 1 thread each,
through the Strategy API the trainer uses. Peak memory per rank is the strategy's own
reading (CUDA max_memory_allocated, else peak RSS since wrapping) next to the planner's
estimate. On a CUDA machine it runs unchanged: every GPU becomes one process.

    python -m bench.distributed.throughput [--steps 30] [--models mlp,cnn,mlp50m]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from scaletrain.config import CNNConfig, MLPConfig, OptimConfig, ParallelConfig
from scaletrain.models import MODELS, build_model
from scaletrain.optim import build_optimizer
from scaletrain.parallel import WrapRequest, build_strategy

ROOT = Path(__file__).parents[2]
# name -> (model config, input shape, global batch)
MODELS_TO_TIME = {
    "mlp": (MLPConfig(hidden=[128, 128]), (64,), 256),
    "cnn": (CNNConfig(channels=[32, 64], head=[128]), (1, 8, 8), 256),
    "mlp50m": (MLPConfig(hidden=[4096, 4096, 4096, 4096]), (1024,), 128),
}


def time_steps(model_name: str, strategy_name: str, *, steps: int, warmup: int = 3) -> dict:
    """Run in a worker: wrap, warm up, then time `steps` optimizer steps on this rank."""
    strategy = build_strategy(ParallelConfig(strategy=strategy_name), device_name="auto")
    strategy.setup()
    try:
        config, input_shape, global_batch = MODELS_TO_TIME[model_name]
        torch.manual_seed(0)
        model = build_model(config, input_shape=input_shape, num_outputs=10)
        num_params = sum(p.numel() for p in model.parameters())
        per_rank = global_batch // strategy.world_size
        inputs = torch.randn(per_rank, *input_shape, device=strategy.device)
        targets = torch.randint(0, 10, (per_rank,), device=strategy.device)
        model = strategy.wrap_model(
            model,
            WrapRequest(
                block_types=MODELS[config.name].block_types,
                example_input=inputs,
                optimizer_states_per_param=2,
            ),
        )
        optimizer = build_optimizer(OptimConfig(name="adamw", lr=1e-4), model)  # as trained
        for step in range(warmup + steps):
            if step == warmup:
                _synchronize(strategy.device)
                started = time.perf_counter()
            nn.functional.cross_entropy(model(inputs), targets).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        _synchronize(strategy.device)
        samples_per_s = global_batch * steps / (time.perf_counter() - started)
        return _row(strategy, model_name, num_params=num_params, samples_per_s=samples_per_s)
    finally:
        strategy.teardown()


def _row(strategy, model_name: str, *, num_params: int, samples_per_s: float) -> dict:
    memory = strategy.memory_report() or {}
    return {
        "model": model_name,
        "strategy": strategy.name,
        "world_size": strategy.world_size,
        "threads": torch.get_num_threads(),
        "params": num_params,
        "device": str(strategy.device),
        "global_batch": MODELS_TO_TIME[model_name][2],
        "samples_per_s": round(samples_per_s, 1),
        "peak_mb": memory.get("measured_peak_mb"),
        "planned_mb": memory.get("estimate_mb"),
        "rank": strategy.rank,
    }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_worker(args) -> None:
    row = time_steps(args.model, args.strategy, steps=args.steps)
    Path(f"{args.out}.rank{row['rank']}").write_text(json.dumps(row))


def launch(
    model: str, strategy: str, *, nproc: int, threads: int, steps: int, out: Path
) -> list[dict]:
    """One measurement in fresh processes (1 = plain python, N = torchrun)."""
    worker = [
        str(Path(__file__)),
        "--worker",
        "--model",
        model,
        "--strategy",
        strategy,
        "--steps",
        str(steps),
        "--out",
        str(out),
    ]
    paths = [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": os.pathsep.join(paths)}
    if nproc == 1 and strategy == "single":
        command = [sys.executable, *worker]
    else:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(nproc),
            *worker,
        ]
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    rows = [json.loads(path.read_text()) for path in sorted(out.parent.glob(out.name + ".rank*"))]
    for path in out.parent.glob(out.name + ".rank*"):
        path.unlink()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--models", default="mlp,cnn,mlp50m")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return
    from bench.results import save_results

    gpus = torch.cuda.device_count()
    nproc, cores = (gpus, gpus) if gpus else (2, os.cpu_count() or 2)
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"scaletrain-bench-{os.getpid()}"
    scratch.mkdir(exist_ok=True)
    results = []
    for model in args.models.split(","):
        runs = [
            ("single", 1, cores),
            ("ddp", nproc, max(1, cores // nproc)),
            ("fsdp", nproc, max(1, cores // nproc)),
        ]
        for strategy, procs, threads in runs:
            rows = launch(
                model,
                strategy,
                nproc=procs,
                threads=threads,
                steps=args.steps,
                out=scratch / f"{model}-{strategy}.json",
            )
            results.extend(rows)
            print(_describe(rows))
    save_results("distributed", results)


def _describe(rows: list[dict]) -> str:
    first = rows[0]
    peaks = ", ".join(f"{row['peak_mb']}" for row in rows if row["peak_mb"] is not None) or "-"
    return (
        f"{first['model']:7s} {first['strategy']:6s} {first['world_size']} proc x "
        f"{first['threads']} thr: {first['samples_per_s']:10.1f} samples/s, "
        f"peak MB per rank {peaks} (planned {first['planned_mb']})"
    )


if __name__ == "__main__":
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    main()
