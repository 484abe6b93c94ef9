"""The classic first PyTorch network: 10 inputs -> 20 hidden (ReLU) -> 5 outputs, random data,
mean squared error, SGD, the loss printed every 100 epochs; here through scaletrain's Python
API with a user module and a callback.

    PYTHONPATH=src python examples/tiny_mse/tiny_mse.py [--epochs 1000] [--out runs/examples]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import scaletrain


class PrintLoss:
    """A scaletrain callback: each epoch's training loss arrives in `on_log` as the
    `train_epoch` record; print it every `every` epochs."""

    def __init__(self, every: int = 100):
        self.every = every
        self.losses: list[float] = []  # every epoch's loss, for whoever wants the curve

    def on_log(self, state, record: dict) -> None:
        if record["split"] != "train_epoch":
            return  # the step window's record: not an epoch
        self.losses.append(record["loss"])
        if record["epoch"] % self.every == 0:
            print(f"epoch {record['epoch']:4d}  loss {record['loss']:.4f}", flush=True)


def config(*, epochs: int, out_dir: str) -> dict:
    """All 100 samples train (no validation or test split) in one batch: one step an epoch."""
    return {
        "run": {"name": "tiny-mse", "seed": 0, "out_dir": out_dir},
        "data": {"task": "regression", "val_fraction": 0.0, "test_fraction": 0.0},
        "loss": {"name": "mse"},
        "optim": {"name": "sgd", "lr": 0.01},
        "train": {"max_epochs": epochs, "batch_size": 100, "precision": "32"},
        "checkpoint": {"every_epochs": 0, "save_best": False},  # only the final weights
        "log": {"progress": False, "tensorboard": False, "report": False},
    }


def main(argv: list[str] | None = None) -> list[float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100, help="print the loss every N epochs")
    parser.add_argument("--out", default="runs/examples", help="parent of the run directory")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    inputs, targets = torch.randn(100, 10), torch.randn(100, 5)
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    printer = PrintLoss(every=args.every)
    run = scaletrain.train(
        config(epochs=args.epochs, out_dir=args.out),
        model=model,
        data={"train": (inputs, targets)},
        callbacks=[printer],
        overwrite=True,
    )
    print(f"first epoch loss {printer.losses[0]:.4f}, last {printer.losses[-1]:.4f}")
    print(f"run directory: {run.run_dir}")
    return printer.losses


if __name__ == "__main__":
    main()
