"""`train.compile: true` vs eager: cold start (compile_s) and steady-state step time.

Each side trains in its own fresh process (nothing compiled yet) with an empty inductor cache
of its own (TORCHINDUCTOR_CACHE_DIR in a temporary folder), so `compile_s` is a true cold
start; `--warm-cache` reuses one cache for all compiled runs instead (what a second run of
the same model costs). Sides alternate eager, compiled, eager, compiled; the step time is the
median of the pooled post-warm-up on_step_end deltas. Run:
`python -m bench.compile [--quick] [--threads N] [--workloads digits-cnn ...]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from bench.parity import WORKLOADS, StepTimer, synthetic
from bench.results import save_results

NAMES = ("digits-cnn", "mlp-784-1024-1024-10")


def _run_side(args) -> None:
    """Child process: one training run; print its figures as JSON."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    import scaletrain
    from bench.raw_loop import scaletrain_config

    workload = next(w for w in WORKLOADS if w.name == args.workload)
    inputs, targets = synthetic(workload)
    # one partial batch per epoch, as real data has: the compiled graphs must not recompile
    inputs, targets = inputs[: workload.num_samples - 23], targets[: workload.num_samples - 23]
    torch.manual_seed(0)
    model = workload.build()
    timer = StepTimer()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        cfg = scaletrain_config(
            name="compile", out_dir=out, steps=args.steps, lr=1e-3, batch_size=workload.batch_size
        )
        cfg["train"].update(compile=args.side == "compiled", num_threads=args.threads)
        run = scaletrain.train(
            cfg, model=model, data={"train": (inputs, targets)}, callbacks=[timer]
        )
        summary = json.loads((run.run_dir / "summary.json").read_text())
        getattr(run, "wait", lambda: None)()  # the background report, before the folder goes
    print(
        json.dumps(
            {
                "seconds": timer.seconds,
                "total_s": time.perf_counter() - started,
                "compile_s": summary["compile_s"],
                "unique_graphs": counters["stats"]["unique_graphs"],
            }
        )
    )


def run_pair(workload, *, steps: int, repeats: int, threads: int, warm_cache: bool) -> dict:
    warmup = max(5, min(20, steps // 5))
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    cold: dict[str, list[float]] = {"eager": [], "compiled": []}
    totals: dict[str, list[float]] = {"eager": [], "compiled": []}
    graphs: list[int] = []
    with tempfile.TemporaryDirectory() as caches:
        for repeat in range(repeats):
            for side in times:
                cache = caches if warm_cache else tempfile.mkdtemp(dir=caches)
                env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
                command = [
                    sys.executable,
                    "-m",
                    "bench.compile",
                    "--side",
                    side,
                    "--workload",
                    workload.name,
                    "--steps",
                    str(steps),
                    "--threads",
                    str(threads),
                ]
                output = subprocess.run(command, capture_output=True, text=True, env=env)
                if output.returncode:
                    raise RuntimeError(f"{side} failed:\n{output.stderr[-3000:]}")
                figures = json.loads(output.stdout.strip().splitlines()[-1])
                times[side] += figures["seconds"][warmup:]
                totals[side].append(figures["total_s"])
                if side == "compiled":
                    cold[side].append(figures["compile_s"])
                    graphs.append(figures["unique_graphs"])
                    if warm_cache and repeat == 0:  # the first run fills the cache: not warm
                        cold[side].pop()
    eager_ms, compiled_ms = (statistics.median(times[s]) * 1e3 for s in ("eager", "compiled"))
    return {
        "workload": workload.name,
        "threads": threads,
        "batch_size": workload.batch_size,
        "steps_per_run": steps,
        "warmup_steps": warmup,
        "repeats": repeats,
        "inductor_cache": "warm" if warm_cache else "cold",
        "compile_s": statistics.median(cold["compiled"]) if cold["compiled"] else None,
        "eager_step_ms": eager_ms,
        "compiled_step_ms": compiled_ms,
        "ratio": compiled_ms / eager_ms,
        "eager_run_s": statistics.median(totals["eager"]),
        "compiled_run_s": statistics.median(totals["compiled"]),
        "unique_graphs": graphs[-1],
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="Fewer steps, one repeat.")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workloads", nargs="*", default=list(NAMES))
    parser.add_argument("--warm-cache", action="store_true", help="Share one inductor cache.")
    for hidden in ("--side", "--workload", "--steps"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    args = _parser().parse_args(argv)
    if args.side:
        args.steps = int(args.steps)
        torch.set_num_threads(args.threads)
        _run_side(args)
        return []
    repeats = 1 if args.quick else args.repeats
    rows = []
    print(
        f"{'workload':<22} {'compile_s':>9} {'eager ms':>9} {'compiled ms':>11} {'ratio':>6} "
        f"{'graphs':>6}"
    )
    for workload in (w for w in WORKLOADS if w.name in args.workloads):
        steps = max(60, workload.steps // 4) if args.quick else workload.steps
        row = run_pair(
            workload,
            steps=steps,
            repeats=repeats,
            threads=args.threads,
            warm_cache=args.warm_cache,
        )
        rows.append(row)
        print(
            f"{row['workload']:<22} {row['compile_s']:9.2f} {row['eager_step_ms']:9.3f} "
            f"{row['compiled_step_ms']:11.3f} {row['ratio']:6.3f} {row['unique_graphs']:6d}",
            flush=True,
        )
    suffix = "_warm" if args.warm_cache else ""
    save_results(f"compile_cpu_t{args.threads}{suffix}", rows)
    return rows


if __name__ == "__main__":
    main()
