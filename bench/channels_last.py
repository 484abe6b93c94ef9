"""channels_last vs the default memory format for scaletrain's CNN, A B A B in one process.

The decision it informs: whether the loop should convert CNNs and their inputs to
channels_last by default (it helps cuDNN/oneDNN convolutions on some shapes, costs layout
conversions on others). Two image sizes: the digits CNN (1x8x8) and a CIFAR-sized one
(3x32x32). Run: `python -m bench.channels_last [--steps 60] [--repeats 2] [--device cpu]`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bench.results import save_results
from scaletrain.config import CNNConfig
from scaletrain.models import build_model

SHAPES = {"digits-1x8x8": ((1, 8, 8), 64), "cifar-3x32x32": ((3, 32, 32), 128)}


def _step_times(shape, batch, *, channels_last: bool, steps: int, device: str) -> list[float]:
    torch.manual_seed(0)
    model = build_model(
        CNNConfig(channels=[32, 64], head=[128]), input_shape=shape, num_outputs=10
    ).to(device)
    inputs = torch.randn(batch, *shape, device=device)
    targets = torch.randint(0, 10, (batch,), device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        F.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - started)
    return times[steps // 5 :]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    rows = []
    for name, (shape, batch) in SHAPES.items():
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):
            for channels_last in times:
                times[channels_last] += _step_times(
                    shape,
                    batch,
                    channels_last=channels_last,
                    steps=args.steps,
                    device=args.device,
                )
        default, last = (statistics.median(times[key]) for key in (False, True))
        rows.append(
            {
                "shape": name,
                "batch": batch,
                "device": args.device,
                "default_step_ms": default * 1e3,
                "channels_last_step_ms": last * 1e3,
                "ratio": last / default,
            }
        )
        print(
            f"{name:<16} batch {batch:4d}  default {default * 1e3:8.2f} ms  "
            f"channels_last {last * 1e3:8.2f} ms  ratio {last / default:.3f}",
            flush=True,
        )
    save_results(f"channels_last_{args.device}", rows)
    return rows


if __name__ == "__main__":
    main()
