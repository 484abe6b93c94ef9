"""Where a short run's time goes outside the training loop, first and second run of a process.

Two entry points: the default config (configs/default.yaml, shortened to a few epochs) through
`scaletrain.train(path)`, and the API with a user module (`scaletrain.train(cfg,
model=MyNet(), data=...)`). Each runs twice in one fresh process: the first run pays the
imports and first-call costs, the second shows what every later run in a notebook pays.
Spans are `time.perf_counter` around the functions the run calls (wrapped here, from outside:
nothing is added to the hot path); "in the loop" is the sum of the optimizer steps.
Run: `python -m bench.outside_loop [--epochs N] [--device cpu|cuda]`.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

# (label, module, attribute[, class]): wrapped where the caller looks the name up
SPANS = [
    ("config", "scaletrain.api", "load_config", None),
    ("strategy setup", "scaletrain.api", "build_strategy", None),
    ("data build", "scaletrain.api", "build_data", None),
    ("model build", "scaletrain.api", "_build_model", None),
    ("model summary", "scaletrain.api", "_write_model_summary", None),
    ("run-dir setup", "scaletrain.api", "prepare_run_dir", None),
    ("trainer setup", "scaletrain.train.loop", "build_trainer", None),
    ("  of which peak FLOP/s probe", "scaletrain.train.setup", "peak_flops", None),
    ("validation (per epoch)", "scaletrain.train.evaluate", "validate", "Evaluator"),
    ("best snapshot (in memory)", "scaletrain.train.best", "keep", "BestWeights"),
    ("loop close", "scaletrain.train.setup", "close", "Trainer"),
    ("final evaluation", "scaletrain.api", "final_evaluation", None),
    ("summary.json", "scaletrain.api", "_write_summary", None),
    ("TensorBoard hparams", "scaletrain.metrics.logger", "log_hparams", "MetricsLogger"),
    ("report (in the call)", "scaletrain.api", "_write_report", None),
    ("TensorBoard hparams (finish)", "scaletrain.finish", "_write_hparams", None),
    ("report (background thread)", "scaletrain.finish", "_write_report", None),
]


def _timed(function, record):
    """`function`, calling `record(seconds, args, kwargs)` after each call (also on raise)."""

    @functools.wraps(function)
    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            record(time.perf_counter() - started, args, kwargs)

    return timed


class Recorder:
    def __init__(self):
        self.spans: dict[str, float] = defaultdict(float)
        self.saves: dict[str, float] = defaultdict(float)
        self.steps: list[float] = []

    def wrap(self, label: str, function):
        return _timed(function, lambda seconds, args, kwargs: self._add(label, seconds))

    def wrap_save(self, function):
        def record(seconds, args, kwargs):
            reason = args[1]
            kind = "best" if kwargs.get("best") else reason.split(":")[0].split(" ")[0]
            self.saves[f"checkpoint: {kind}"] += seconds

        return _timed(function, record)

    def wrap_step(self, function):
        return _timed(function, lambda seconds, args, kwargs: self.steps.append(seconds))

    def _add(self, label: str, seconds: float) -> None:
        self.spans[label] += seconds


def _install(recorder: Recorder) -> None:
    for label, module_name, attribute, class_name in SPANS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        owner = getattr(module, class_name, None) if class_name else module
        if owner is not None and hasattr(owner, attribute):
            setattr(owner, attribute, recorder.wrap(label, getattr(owner, attribute)))
    setup = importlib.import_module("scaletrain.train.setup")
    setup.Trainer.save = recorder.wrap_save(setup.Trainer.save)
    step = importlib.import_module("scaletrain.train.step")
    step.TrainStep.__call__ = recorder.wrap_step(step.TrainStep.__call__)


def _user_run(out: str, epochs: int, device: str, name: str):
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    import scaletrain

    class MyNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1)
            )
            self.head = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(64 * 64, 10))

        def forward(self, inputs):
            return self.head(self.features(inputs))

    digits = load_digits()
    inputs = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
    targets = torch.tensor(digits.target)
    cfg = {
        "run": {"name": name, "out_dir": out},
        "train": {"max_epochs": epochs, "batch_size": 64, "device": device},
        "data": {"val_fraction": 0.1, "test_fraction": 0.1},
    }
    return scaletrain.train(cfg, model=MyNet(), data={"train": (inputs, targets)})


def _default_run(out: str, epochs: int, device: str, name: str):
    import scaletrain

    overrides = [
        f"run.out_dir={out}",
        f"run.name={name}",
        f"train.max_epochs={epochs}",
        f"train.device={device}",
    ]
    return scaletrain.train("configs/default.yaml", overrides=overrides)


def _child(entry: str, epochs: int, device: str) -> None:
    started = time.perf_counter()
    importlib.import_module("scaletrain.api")  # the import is what is timed
    imports_s = time.perf_counter() - started
    runner = {"default": _default_run, "user": _user_run}[entry]
    rows, recorder = [], Recorder()
    _install(recorder)
    with tempfile.TemporaryDirectory() as out:
        for index in range(2):
            recorder.__init__()  # empty for this run
            started = time.perf_counter()
            run = runner(out, epochs, device, f"run{index}")
            total = time.perf_counter() - started
            _join_background(run)
            joined = time.perf_counter() - started
            loop = sum(recorder.steps)
            rows.append(
                {
                    "run": index + 1,
                    "imports_s": imports_s if index == 0 else 0.0,
                    "call_s": total,
                    "until_report_s": joined,
                    "loop_s": loop,
                    "first_step_extra_s": recorder.steps[0] - _median(recorder.steps),
                    "steps": len(recorder.steps),
                    "spans": dict(recorder.spans),
                    "saves": dict(recorder.saves),
                    "test_accuracy": run.metrics.get("test", {}).get("accuracy"),
                }
            )
    print(json.dumps(rows))


def _join_background(run) -> None:
    wait = getattr(run, "wait", None)  # the report written in a background thread
    if callable(wait):
        wait()


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0


def _print(entry: str, rows: list[dict]) -> None:
    print(f"\n== {entry} ==")
    labels = [label for label, *_ in SPANS if any(label in r["spans"] for r in rows)]
    saves = sorted({key for r in rows for key in r["saves"]})
    print(f"{'span':<34}" + "".join(f"{'run ' + str(r['run']):>10}" for r in rows))
    lines = [("imports", [r["imports_s"] for r in rows])]
    lines += [(label, [r["spans"].get(label, 0.0) for r in rows]) for label in labels]
    lines += [(key, [r["saves"].get(key, 0.0) for r in rows]) for key in saves]
    lines += [("first-step warm-up", [r["first_step_extra_s"] for r in rows])]
    for label, values in lines:
        print(f"{label:<34}" + "".join(f"{v:10.3f}" for v in values))
    print(f"{'train() call, total':<34}" + "".join(f"{r['call_s']:10.3f}" for r in rows))
    print(f"{'in the loop (optimizer steps)':<34}" + "".join(f"{r['loop_s']:10.3f}" for r in rows))
    outside = [r["call_s"] - r["loop_s"] for r in rows]
    print(f"{'OUTSIDE THE LOOP (call - loop)':<34}" + "".join(f"{v:10.3f}" for v in outside))
    after = [r["until_report_s"] - r["call_s"] for r in rows]
    print(f"{'report after return (background)':<34}" + "".join(f"{v:10.3f}" for v in after))
    print("steps", rows[0]["steps"], " test accuracy", [r["test_accuracy"] for r in rows])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--entries", default="default,user")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.epochs, args.device)
        return {}
    print("load:", os.getloadavg(), flush=True)
    results = {}
    for entry in args.entries.split(","):
        command = [sys.executable, "-m", "bench.outside_loop", "--child", entry]
        command += ["--epochs", str(args.epochs), "--device", args.device]
        output = subprocess.run(command, capture_output=True, text=True)
        if output.returncode:
            raise RuntimeError(f"{entry} failed:\n{output.stderr[-3000:]}")
        results[entry] = json.loads(output.stdout.strip().splitlines()[-1])
        _print(entry, results[entry])
    return results


if __name__ == "__main__":
    main()
