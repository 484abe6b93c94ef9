"""Time to accuracy: seconds for the digits CNN to reach >= 98 % test accuracy.

Each config trains in a fresh process; the clock covers `scaletrain.train()` (data loading,
training, per-epoch evaluation, checkpoints, the final evaluation), not Python start-up or
imports. The HTML report and progress bar are turned off (they are not training).
Run: `python -m bench.tta [--repeats R] [configs...]`.
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

TARGET = 0.98
CONFIGS = ["configs/default.yaml", "configs/digits-fast.yaml"]


def _child(config: str, out_dir: str) -> None:
    import scaletrain

    started = time.perf_counter()
    run = scaletrain.train(
        config,
        overrides=["log.report=false", "log.progress=false", f"run.out_dir={out_dir}"],
        overwrite=True,
    )
    seconds = time.perf_counter() - started
    summary = json.loads((run.run_dir / "summary.json").read_text())
    print(
        json.dumps(
            {
                "seconds": seconds,
                "test_accuracy": run.metrics["test"]["accuracy"],
                "epochs": summary["epochs"],
                "steps": summary["steps"],
                "mfu": summary.get("mfu"),
                "overhead_fraction": summary.get("overhead_fraction"),
            }
        )
    )


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("configs", nargs="*", default=CONFIGS)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.out)
        return []
    results: dict[str, list[dict]] = {config: [] for config in args.configs}
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.repeats):  # alternate the configs: drift hits all alike
            for config in args.configs:
                command = [sys.executable, "-m", "bench.tta", "--child", config, "--out", out]
                output = subprocess.run(command, capture_output=True, text=True)
                if output.returncode:
                    raise RuntimeError(f"{config} failed:\n{output.stderr[-3000:]}")
                results[config].append(json.loads(output.stdout.strip().splitlines()[-1]))
    rows = []
    for config, runs in results.items():
        row = {
            "config": config,
            "median_seconds": statistics.median(r["seconds"] for r in runs),
            "min_test_accuracy": min(r["test_accuracy"] for r in runs),
            "reached_target": all(r["test_accuracy"] >= TARGET for r in runs),
            "runs": runs,
        }
        rows.append(row)
        print(
            f"{config:<28} {row['median_seconds']:7.2f} s  test accuracy >= "
            f"{row['min_test_accuracy']:.4f}  target {TARGET:.0%} met: {row['reached_target']}",
            flush=True,
        )
    save_results("tta", rows)
    return rows


if __name__ == "__main__":
    main()
