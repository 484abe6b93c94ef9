"""The before/after table of docs/compress.md: each built-in config trained once, then
compressed each way; one Markdown table per config (its fp32 run first).

Every `scaletrain compress` runs in its own process (as from the command line), so one
method's threads and caches do not time the next. Run: `python -m bench.compress_table
[--repeats R] [--name NAME] [configs...]`; results in `bench/results/NAME.json` (default
`compress`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.results import save_results

CONFIGS = ["configs/digits-fast.yaml", "configs/default.yaml", "configs/resnet-digits.yaml"]
METHODS = {
    "prune 50 % (global, 2 fine-tune epochs)": {"prune": 0.5, "finetune_epochs": 2},
    "prune 50 % structured (3 fine-tune epochs)": {
        "prune": 0.5,
        "structured": True,
        "finetune_epochs": 3,
    },
    "prune 50 % gradual (3 steps x 1 epoch)": {
        "prune": 0.5,
        "schedule": "gradual",
        "steps": 3,
        "finetune_epochs": 1,
    },
    "int8-dynamic": {"quantize": "int8-dynamic"},
    "int8-weight": {"quantize": "int8-weight"},
    "int4-weight": {"quantize": "int4-weight"},
    "qat (2 epochs) -> int8-dynamic": {"quantize": "qat", "finetune_epochs": 2},
}
QUIET = ["log.report=false", "log.progress=false", "log.tensorboard=false"]


def _train(config: str, out_dir: str) -> str:
    import scaletrain

    run = scaletrain.train(config, overrides=[*QUIET, f"run.out_dir={out_dir}"], overwrite=True)
    run.wait()
    return str(run.run_dir)


def _compress(run_dir: str, out: str, flags: str, repeats: int) -> None:
    from scaletrain.compress import CompressOptions, compress
    from scaletrain.errors import UserError

    options = CompressOptions(**json.loads(flags), latency_repeats=repeats, overrides=QUIET)
    try:
        result = compress(run_dir, options, out=out)
    except UserError as exc:  # e.g. --structured on a resnet
        print(json.dumps({"refused": str(exc)}))
        return
    row = {"before": vars(result.before), "after": vars(result.after)}
    print(json.dumps({**row, "metric": result.metric, "sparsity": result.sparsity}))


def _child(*args: str) -> dict:
    command = [sys.executable, "-m", "bench.compress_table", "--child", *args]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def _row(name: str, measured: dict) -> str:
    latency = measured["latency_ms"]
    return (
        f"| {name} | {measured['nonzero']:,} / {measured['total']:,} | "
        f"{measured['disk_bytes'] / 1024:.1f} | {latency['1']:.3f} | {latency['64']:.2f} | "
        f"{100 * measured['metric']:.2f} |"
    )


def _methods(args) -> list[tuple[str, dict]]:
    """METHODS filtered by --methods; with --finetune-epochs N, each fine-tune takes N."""
    wanted = args.methods.split(",") if args.methods else None
    chosen = []
    for name, flags in METHODS.items():
        if wanted and not any(part in name for part in wanted):
            continue
        if args.finetune_epochs is not None and "finetune_epochs" in flags:
            flags = {**flags, "finetune_epochs": args.finetune_epochs}
            name = f"{name} [fine-tune epochs: {args.finetune_epochs}]"
        chosen.append((name, flags))
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("configs", nargs="*", default=CONFIGS)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--child", nargs="+")
    parser.add_argument("--name", default="compress", help="bench/results/NAME.json")
    parser.add_argument("--methods", help="only the methods whose name holds one of these, "
                        "comma-separated (e.g. `structured,qat`)")  # fmt: skip
    parser.add_argument("--finetune-epochs", type=int,
                        help="every fine-tuning method's epochs (a long config's budget)")  # fmt: skip
    args = parser.parse_args()
    if args.child:
        if args.child[0] == "train":
            print(json.dumps({"run_dir": _train(*args.child[1:])}))
        else:
            _compress(*args.child[1:4], int(args.child[4]))
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs:
            run_dir = _child("train", config, tmp)["run_dir"]
            print(f"\n### `{config}`\n")
            print("| method | parameters (nonzero / total) | KiB on disk | ms, batch 1 | "
                  "ms, batch 64 | test accuracy % |")  # fmt: skip
            print("|---|---:|---:|---:|---:|---:|")
            source_printed = False
            for index, (name, flags) in enumerate(_methods(args)):
                out = str(Path(tmp) / f"{Path(config).stem}-{index}")
                row = _child("compress", run_dir, out, json.dumps(flags), str(args.repeats))
                results.append({"config": config, "method": name, **row})
                if "refused" in row:
                    print(f"| {name} | refused: {row['refused']} | | | | |")
                    continue
                if not source_printed:
                    print(_row("fp32 (the trained run)", row["before"]))
                    source_printed = True
                print(_row(name, row["after"]), flush=True)
    save_results(args.name, results)


if __name__ == "__main__":
    main()
