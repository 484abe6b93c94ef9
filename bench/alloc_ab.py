"""A/B: glibc malloc defaults vs `scaletrain._alloc.tune_malloc()` on workload (a).

Each side runs in a fresh process with MALLOC_* unset (as a user who never sets them), the
sides alternating A B A B. Run: `python -m bench.alloc_ab [--steps N] [--repeats R]`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

import torch

from bench.results import save_results


def _child(tuned: bool, steps: int, threads: int, precision: str) -> None:
    if tuned:
        from scaletrain._alloc import tune_malloc

        assert tune_malloc()
    torch.set_num_threads(threads)
    from bench.parity import WORKLOADS, synthetic
    from bench.raw_loop import raw_train

    workload = WORKLOADS[0]
    inputs, targets = synthetic(workload)
    torch.manual_seed(0)
    result = raw_train(
        workload.build(),
        inputs,
        targets,
        steps=steps,
        batch_size=workload.batch_size,
        lr=1e-3,
        bf16=precision == "bf16-mixed",
    )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    times = result.step_seconds[min(10, steps // 4) :]
    print(
        json.dumps(
            {
                "step_ms": statistics.median(times) * 1e3,
                "sys_s": usage.ru_stime,
                "minor_faults": usage.ru_minflt,
            }
        )
    )


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--precision", default="32")
    parser.add_argument("--child", choices=["default", "tuned"])
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child == "tuned", args.steps, args.threads, args.precision)
        return []
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    samples: dict[str, list[dict]] = {"default": [], "tuned": []}
    for _ in range(args.repeats):
        for side in samples:
            command = [
                sys.executable,
                "-m",
                "bench.alloc_ab",
                "--child",
                side,
                "--steps",
                str(args.steps),
                "--threads",
                str(args.threads),
                "--precision",
                args.precision,
            ]
            output = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            samples[side].append(json.loads(output.stdout.strip().splitlines()[-1]))
    row = {
        "workload": "mlp-784-1024-1024-10",
        "precision": args.precision,
        "threads": args.threads,
        "steps": args.steps,
        "repeats": args.repeats,
    }
    for side, runs in samples.items():
        for key in ("step_ms", "sys_s", "minor_faults"):
            row[f"{side}_{key}"] = statistics.median(run[key] for run in runs)
    row["ratio_tuned_over_default"] = row["tuned_step_ms"] / row["default_step_ms"]
    print(json.dumps(row, indent=1))
    save_results(f"alloc_ab_{args.precision}_t{args.threads}", [row])
    return [row]


if __name__ == "__main__":
    main()
