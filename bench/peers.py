"""Peers: PyTorch Lightning and Keras 3 (torch backend) vs scaletrain on workload (a).

MLP 784-1024-1024-10, batch 256, AdamW(lr 1e-3), synthetic data, fp32; each variant in a
fresh process, variants alternating (A B C ... A B C ...). "default" is what a user gets from
the framework's documented minimal usage; "fast" turns off progress bars, logging,
checkpointing and summaries (the honest speed settings; same math).
Needs the optional `bench` dependencies (`pip install -e '.[bench]'`); skipped otherwise.
Run: `python -m bench.peers [--steps N] [--repeats R] [--threads T]`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from bench.results import save_results

VARIANTS = [
    "scaletrain-default",
    "scaletrain-fast",
    "lightning-default",
    "lightning-fast",
    "keras-default",
    "keras-fast",
]
BATCH, NUM_SAMPLES, WIDTHS = 256, 8192, (784, 1024, 1024, 10)


def missing() -> list[str]:
    """Names of the peer packages that are not installed."""
    return [name for name in ("lightning", "keras") if importlib.util.find_spec(name) is None]


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(NUM_SAMPLES, WIDTHS[0], generator=generator)
    return inputs, torch.randint(0, WIDTHS[-1], (NUM_SAMPLES,), generator=generator)


def _mlp() -> torch.nn.Module:
    from bench.parity import _mlp as build

    return build(list(WIDTHS))


class Clock:
    def __init__(self):
        self.times: list[float] = []

    def tick(self, *args, **kwargs) -> None:
        self.times.append(time.perf_counter())


def _scaletrain(clock: Clock, steps: int, out: str, fast: bool) -> None:
    import scaletrain

    cfg = {
        "run": {"name": "peer", "out_dir": out},
        "train": {"max_steps": steps, "batch_size": BATCH},
        "optim": {"lr": 1e-3},
    }
    if fast:
        cfg["log"] = {"progress": False, "tensorboard": False, "report": False}
        cfg["checkpoint"] = {"every_epochs": 0, "save_best": False}
    clock.on_step_end = clock.tick
    run = scaletrain.train(cfg, model=_mlp(), data={"train": _data()}, callbacks=[clock])
    getattr(run, "wait", lambda: None)()  # the background report, before the folder goes


def _lightning(clock: Clock, steps: int, out: str, fast: bool) -> None:
    import lightning as L
    import torch.nn.functional as F

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _mlp()

        def training_step(self, batch, batch_index):
            inputs, targets = batch
            loss = F.cross_entropy(self.net(inputs), targets)
            self.log("loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    class Tick(L.Callback):
        def on_train_batch_end(self, *args):
            clock.tick()

    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(*_data()), batch_size=BATCH, shuffle=True
    )
    options = {
        "max_steps": steps,
        "default_root_dir": out,
        "callbacks": [Tick()],
        "accelerator": "cpu",
    }
    if fast:
        options.update(
            enable_progress_bar=False,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
        )
    L.Trainer(**options).fit(Module(), loader)


def _keras(clock: Clock, steps: int, out: str, fast: bool) -> None:
    import keras

    model = keras.Sequential(
        [keras.Input((WIDTHS[0],))]
        + [keras.layers.Dense(w, activation="relu") for w in WIDTHS[1:-1]]
        + [keras.layers.Dense(WIDTHS[-1])]
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    inputs, targets = (t.numpy() for t in _data())
    tick = keras.callbacks.LambdaCallback(on_train_batch_end=clock.tick)
    epochs = -(-steps // (NUM_SAMPLES // BATCH))
    model.fit(
        inputs,
        targets,
        batch_size=BATCH,
        epochs=epochs,
        callbacks=[tick],
        verbose=0 if fast else "auto",
    )


def _child(variant: str, steps: int, threads: int) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    clock = Clock()
    framework, mode = variant.split("-")
    runner = {"scaletrain": _scaletrain, "lightning": _lightning, "keras": _keras}[framework]
    with tempfile.TemporaryDirectory() as out:
        runner(clock, steps, out, mode == "fast")
    deltas = [b - a for a, b in zip(clock.times, clock.times[1:], strict=False)]
    print(json.dumps({"step_s": deltas}))


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.steps, args.threads)
        return []
    if missing():
        print(
            f"peers skipped: {', '.join(missing())} not installed "
            "(pip install -e '.[bench]' to compare with Lightning and Keras)"
        )
        return []
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    samples: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for _ in range(args.repeats):
        for variant in VARIANTS:
            command = [
                sys.executable,
                "-m",
                "bench.peers",
                "--child",
                variant,
                "--steps",
                str(args.steps),
                "--threads",
                str(args.threads),
            ]
            output = subprocess.run(command, capture_output=True, text=True, env=env)
            if output.returncode:
                raise RuntimeError(f"{variant} failed:\n{output.stderr[-3000:]}")
            step_s = json.loads(output.stdout.strip().splitlines()[-1])["step_s"]
            samples[variant] += step_s[min(10, len(step_s) // 4) :]
    ours = BATCH / statistics.median(samples["scaletrain-default"])
    rows = []
    for variant, step_s in samples.items():
        per_s = BATCH / statistics.median(step_s)
        rows.append(
            {
                "variant": variant,
                "samples_per_s": per_s,
                "scaletrain_default_over_this": ours / per_s,
                "threads": args.threads,
                "steps_timed": len(step_s),
            }
        )
        print(
            f"{variant:<20} {per_s:9.0f} samples/s   scaletrain-default / this: {ours / per_s:.2f}",
            flush=True,
        )
    save_results("peers", rows)
    return rows


if __name__ == "__main__":
    main()
