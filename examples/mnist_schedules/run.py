"""Fixed vs exponential vs step learning-rate decay on an MNIST-shaped MLP, then one
`scaletrain compare` report of the three runs.

    PYTHONPATH=src python examples/mnist_schedules/run.py [--out runs/examples]
        [--samples N] [--set KEY=VALUE ...]

Each run is the command a user would type (`python -m scaletrain train mlp.yaml ...`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from digits28 import write_digits28

HERE = Path(__file__).resolve().parent

# lr multiplier per optimizer step; 10 epochs of 1257 samples in batches of 32: 400 steps
SCHEDULES = {
    "fixed": ["optim.schedule.name=constant"],
    "exponential": ["optim.schedule.name=exponential", "optim.schedule.gamma=0.995"],
    "step": [
        "optim.schedule.name=step",
        "optim.schedule.step_size=100",
        "optim.schedule.gamma=0.5",
    ],
}


def scaletrain(*args: str) -> None:
    command = [sys.executable, "-m", "scaletrain", *args]
    print("$", " ".join(["scaletrain", *args]), flush=True)
    subprocess.run(command, check=True)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/examples", help="parent of the run directories")
    parser.add_argument("--samples", type=int, default=None, help="use the first N digits")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an override for all three runs, e.g. train.max_epochs=2",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    data = write_digits28(out / "digits28.npz", num_samples=args.samples)
    run_dirs = []
    for name, overrides in SCHEDULES.items():
        scaletrain(
            "train", str(HERE / "mlp.yaml"), "--out", str(out), "--overwrite",
            f"run.name=mnist-{name}", f"data.path={data}", *overrides, *args.set,
        )  # fmt: skip
        run_dirs.append(str(out / f"mnist-{name}"))
    report = out / "mnist-schedules.html"
    scaletrain("compare", *run_dirs, "--out", str(report))
    return report


if __name__ == "__main__":
    main()
