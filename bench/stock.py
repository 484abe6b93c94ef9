"""Stock defaults side by side: scaletrain, Lightning and Keras 3 (torch backend) as each ships,
a hand-written PyTorch loop, scaletrain lean (no validation, checkpoints or report) and, on
request, scaletrain-auto (stock precision: `auto` instead of the workload's).

Four workloads (issue 14): digits MLP 64-256-256-10 (20 epochs), synthetic MLP
784-1024-1024-10 (2 epochs), digits CNN (15 epochs), synthetic MLP in bf16 (2 epochs). The same
model, data (train/val/test), AdamW(lr 1e-3, weight decay 0.01), batch and seed everywhere;
validation on the val split after each epoch where the framework does it by default; test
accuracy at the end. Throughput is samples/s from the start of epoch 2 to the return of the
training call (per-run setup is not counted; per-epoch validation, checkpoints and the work
after the last step are). A second figure, "to test metrics", ends where each variant's test
accuracy is known: scaletrain's call returns with it (`run.metrics["test"]`), the others
evaluate test after their call (Keras `model.evaluate`; the raw loop and Lightning one
forward pass over test). Each (workload, variant) runs in a fresh process, variants
alternating (A B C D E A B C D E ...), so load from other users hits all alike.
Run: `python -m bench.stock [--repeats 3] [--workloads digits-mlp,...] [--threads T]
[--before-src /path/to/old/src]`.
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

from bench.results import save_results

VARIANTS = ["raw", "scaletrain", "lightning", "keras", "scaletrain-lean"]
WORKLOADS = {
    # name: (data, model, epochs, batch, bf16)
    "digits-mlp": ("digits", "mlp-small", 20, 64, False),
    "synthetic-mlp": ("synthetic", "mlp-large", 2, 256, False),
    "digits-cnn": ("digits", "cnn", 15, 64, False),
    "synthetic-mlp-bf16": ("synthetic", "mlp-large", 2, 256, True),
}
LR, WEIGHT_DECAY = 1e-3, 0.01


def _data(name: str):
    """(train, val, test) as float32/int64 numpy pairs; features standardized with train stats."""
    import numpy as np

    rng = np.random.default_rng(0)
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        inputs, targets = digits.data.astype(np.float32), digits.target.astype(np.int64)
    else:  # 10 classes around random centres in 784-D: learnable, not trivially
        num, dim = 12000, 784
        centres = rng.normal(size=(10, dim)).astype(np.float32)
        targets = rng.integers(0, 10, num).astype(np.int64)
        inputs = centres[targets] * 0.08 + rng.normal(size=(num, dim)).astype(np.float32)
    order = rng.permutation(len(targets))
    inputs, targets = inputs[order], targets[order]
    num_val, num_test = len(targets) // 10, len(targets) // 5
    train = slice(num_val + num_test, None)
    mean, std = inputs[train].mean(0), inputs[train].std(0) + 1e-6
    inputs = ((inputs - mean) / std).astype(np.float32)
    cut = [slice(num_val + num_test, None), slice(0, num_val), slice(num_val, num_val + num_test)]
    return [(inputs[s], targets[s]) for s in cut]


def _torch_model(kind: str, data: str):
    from torch import nn

    if kind == "cnn":
        return nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)),
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 16, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        )
    widths = (64, 256, 256, 10) if kind == "mlp-small" else (784, 1024, 1024, 10)
    layers = []
    for a, b in zip(widths[:-2], widths[1:-1], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-2], widths[-1]))


class Marks:
    """The start of epoch 2 (after epoch 1's validation, where there is one)."""

    def __init__(self):
        self.epoch2: float | None = None

    def epoch_done(self, epoch_index: int) -> None:
        if epoch_index == 1 and self.epoch2 is None:
            self.epoch2 = time.perf_counter()


def _accuracy(model, test, bf16: bool) -> float:
    import torch

    inputs, targets = (torch.as_tensor(a) for a in test)
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return float((model(inputs).argmax(1) == targets).float().mean())


def _raw(splits, kind, data, epochs, batch, bf16, marks, out):
    import torch
    import torch.nn.functional as F

    model = _torch_model(kind, data)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    inputs, targets = (torch.as_tensor(a) for a in splits[0])
    generator = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        model.train()
        for rows in torch.randperm(len(targets), generator=generator).split(batch):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(inputs[rows]), targets[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        marks.epoch_done(epoch + 1)
    return _accuracy(model, splits[2], bf16)


def _scaletrain(splits, kind, data, epochs, batch, bf16, marks, out, lean=False, auto=False):
    """`auto`: train.precision left at its stock default (`auto`: bf16-mixed where the CPU
    has AVX512-BF16/AMX or on a GPU, else fp32) instead of the workload's precision."""
    import scaletrain

    class Tick:
        def on_epoch_end(self, state):
            marks.epoch_done(state.epoch)

    cfg = {
        "run": {"name": "stock", "out_dir": out},
        "train": {
            "max_epochs": epochs,
            "batch_size": batch,
            "precision": "bf16-mixed" if bf16 else "32",
        },
        "optim": {"name": "adamw", "lr": LR, "weight_decay": WEIGHT_DECAY},
    }
    if auto:
        del cfg["train"]["precision"]
    parts = {"train": splits[0], "val": splits[1], "test": splits[2]}
    if lean:
        cfg["log"] = {"progress": False, "tensorboard": False, "report": False}
        cfg["checkpoint"] = {"every_epochs": 0, "save_best": False}
        cfg["data"] = {"val_fraction": 0.0}
        del parts["val"]
    run = scaletrain.train(
        cfg, model=_torch_model(kind, data), data=parts, callbacks=[Tick()], overwrite=True
    )
    marks.returned = time.perf_counter()
    assert "accuracy" in run.metrics["test"]  # the call returns with test metrics: known here
    marks.tested = marks.returned
    getattr(run, "wait", lambda: None)()  # the background report, before the folder goes
    return _accuracy(run.model, splits[2], bf16)


def _lightning(splits, kind, data, epochs, batch, bf16, marks, out):
    import lightning as L
    import torch
    import torch.nn.functional as F

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _torch_model(kind, data)

        def training_step(self, batch_data, batch_index):
            inputs, targets = batch_data
            loss = F.cross_entropy(self.net(inputs), targets)
            self.log("loss", loss)
            return loss

        def validation_step(self, batch_data, batch_index):
            inputs, targets = batch_data
            output = self.net(inputs)
            self.log("val_loss", F.cross_entropy(output, targets))
            self.log("val_acc", (output.argmax(1) == targets).float().mean())

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)

    class Tick(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            marks.epoch_done(trainer.current_epoch)

    def loader(split, shuffle):
        dataset = torch.utils.data.TensorDataset(*(torch.as_tensor(a) for a in split))
        return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=shuffle)

    module = Module()
    trainer = L.Trainer(
        max_epochs=epochs,
        default_root_dir=out,
        callbacks=[Tick()],
        accelerator="cpu",
        precision="bf16-mixed" if bf16 else "32-true",
    )
    trainer.fit(module, loader(splits[0], True), loader(splits[1], False))
    marks.returned = time.perf_counter()
    return _accuracy(module.net, splits[2], bf16)


def _keras_model(kind: str):
    import keras

    if kind == "cnn":
        layers = [
            keras.Input((64,)),
            keras.layers.Reshape((8, 8, 1)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ]
        return keras.Sequential(layers)
    widths = (64, 256, 256, 10) if kind == "mlp-small" else (784, 1024, 1024, 10)
    return keras.Sequential(
        [keras.Input((widths[0],))]
        + [keras.layers.Dense(w, activation="relu") for w in widths[1:-1]]
        + [keras.layers.Dense(widths[-1])]
    )


def _keras(splits, kind, data, epochs, batch, bf16, marks, out):
    import keras

    if bf16:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    model = _keras_model(kind)
    model.compile(
        optimizer=keras.optimizers.AdamW(LR, weight_decay=WEIGHT_DECAY),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    tick = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: marks.epoch_done(epoch)
    )
    model.fit(
        *splits[0], batch_size=batch, epochs=epochs, validation_data=splits[1], callbacks=[tick]
    )
    marks.returned = time.perf_counter()
    return float(model.evaluate(*splits[2], verbose=0)[1])


def _child(workload: str, variant: str, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    data, kind, epochs, batch, bf16 = WORKLOADS[workload]
    splits = _data(data)
    marks = Marks()
    runner = {
        "raw": _raw,
        "scaletrain": _scaletrain,
        "scaletrain-lean": lambda *a: _scaletrain(*a, lean=True),
        "scaletrain-auto": lambda *a: _scaletrain(*a, auto=True),
        "lightning": _lightning,
        "keras": _keras,
    }[variant]
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        accuracy = runner(splits, kind, data, epochs, batch, bf16, marks, out)
        tested = getattr(marks, "tested", time.perf_counter())
        returned = getattr(marks, "returned", tested)
        samples = (epochs - 1) * len(splits[0][1])
        result = {
            "samples_per_s": samples / (returned - marks.epoch2),
            "to_test_samples_per_s": samples / (tested - marks.epoch2),
            "test_accuracy": accuracy,
            "call_s": returned - started,
        }
    print(json.dumps(result))


def _run_child(workload: str, variant: str, threads: int, before_src: str | None) -> dict:
    """One fresh process; `scaletrain-before` is the stock variant run from `--before-src`
    (an older checkout's src/), for before/after figures in the same alternation."""
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    if variant == "scaletrain-before":
        variant, env["PYTHONPATH"] = "scaletrain", f"{before_src}{os.pathsep}{os.getcwd()}"
    command = [sys.executable, "-m", "bench.stock", "--child", f"{workload}:{variant}"]
    command += ["--threads", str(threads)]
    output = subprocess.run(command, capture_output=True, text=True, env=env)
    if output.returncode:
        raise RuntimeError(f"{workload} {variant} failed:\n{output.stderr[-3000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--before-src", help="adds variant scaletrain-before run from this src/")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--name", default="stock", help="bench/results/NAME.json")
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child.split(":"), args.threads)
        return []
    variants = args.variants.split(",") + (["scaletrain-before"] if args.before_src else [])
    rows = []
    for workload in args.workloads.split(","):
        print(f"== {workload}  load {os.getloadavg()[0]:.2f}", flush=True)
        runs: dict[str, list[dict]] = {variant: [] for variant in variants}
        for _ in range(args.repeats):
            for variant in variants:
                runs[variant].append(_run_child(workload, variant, args.threads, args.before_src))
        rows += _summarize(workload, runs)
    print(f"load after: {os.getloadavg()}")
    save_results(args.name, rows)
    return rows


def _summarize(workload: str, runs: dict[str, list[dict]]) -> list[dict]:
    median = {v: statistics.median(r["samples_per_s"] for r in rs) for v, rs in runs.items()}
    raw = median.get("raw")
    rows = []
    for variant, results in runs.items():
        row = {
            "workload": workload,
            "variant": variant,
            "samples_per_s": median[variant],
            "ratio_to_raw": median[variant] / raw if raw else None,
            "to_test_samples_per_s": statistics.median(r["to_test_samples_per_s"] for r in results),
            "test_accuracy": statistics.median(r["test_accuracy"] for r in results),
            "call_s": statistics.median(r["call_s"] for r in results),
            "repeats": len(results),
        }
        rows.append(row)
        ratio = f"{row['ratio_to_raw']:.2f}" if raw else "-"
        print(
            f"  {variant:<16} {row['samples_per_s']:9.0f} samples/s  x raw {ratio:>5}  "
            f"to test metrics {row['to_test_samples_per_s']:9.0f} samples/s  "
            f"test acc {row['test_accuracy']:.3f}  call {row['call_s']:.1f} s",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    main()
