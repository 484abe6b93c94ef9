"""Per-step overhead, measured step by step in one process: scaletrain's step vs a raw step.

The A B A B parity bench (`bench/parity.py`) compares fresh processes, so on a shared VM
its ratio moves by several percent between runs (the machine's speed drifts by 2x within
minutes). Here a scaletrain callback runs one hand-written step of an identical model copy
after every scaletrain step, so each pair of steps sees the same machine state; the median
of each side over ~1,500 pairs gives a ratio that repeats to about ±0.01.

    python -m bench.overhead [--workloads digits-cnn mlp-784-1024-1024-10] [--steps 1500]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

from bench.parity import WORKLOADS, Workload, synthetic
from bench.raw_loop import scaletrain_config
from bench.results import save_results
from scaletrain.data import epoch_order


class InterleavedRawSteps:
    """Callback: after each scaletrain step, time one raw step on its own model copy."""

    def __init__(self, model: nn.Module, inputs, targets, *, batch_size: int, lr: float):
        self.channels_last = any(isinstance(m, nn.Conv2d) for m in model.modules())
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = copy.deepcopy(model).to(memory_format=memory_format)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=lr, weight_decay=0.0, fused=True
        )
        self.inputs, self.targets, self.batch_size = inputs, targets, batch_size
        self.order = epoch_order(len(inputs), seed=0, epoch=0, shuffle=True)
        self.position = 0
        self.raw_seconds: list[float] = []
        self.ours_seconds: list[float] = []
        self._last_end: float | None = None

    def on_step_end(self, state) -> None:
        now = time.perf_counter()
        if self._last_end is not None:  # scaletrain's step: from the end of the last callback
            self.ours_seconds.append(now - self._last_end)
        self.raw_seconds.append(self._raw_step())
        self._last_end = time.perf_counter()

    def _raw_step(self) -> float:
        if self.position >= len(self.inputs):
            self.position = 0
        started = time.perf_counter()
        index = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        batch = self.inputs[index]
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(self.model(batch), self.targets[index])
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started


def measure(workload: Workload, *, steps: int, guard: str) -> dict:
    import scaletrain

    inputs, targets = synthetic(workload)
    torch.manual_seed(0)
    model = workload.build()
    raw = InterleavedRawSteps(model, inputs, targets, batch_size=workload.batch_size, lr=1e-3)
    with tempfile.TemporaryDirectory() as out:
        cfg = scaletrain_config(
            name="overhead",
            out_dir=out,
            steps=steps,
            lr=1e-3,
            batch_size=workload.batch_size,
            guard=guard,
        )
        run = scaletrain.train(cfg, model=model, data={"train": (inputs, targets)}, callbacks=[raw])
        getattr(run, "wait", lambda: None)()  # the background report, before the folder goes
    warmup = min(50, steps // 5)
    ours = statistics.median(raw.ours_seconds[warmup:])
    theirs = statistics.median(raw.raw_seconds[warmup:])
    return {
        "workload": workload.name,
        "guard": guard,
        "steps": steps,
        "raw_step_ms": theirs * 1e3,
        "scaletrain_step_ms": ours * 1e3,
        "overhead_us": (ours - theirs) * 1e6,
        "ratio": ours / theirs,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workloads", nargs="*", default=["digits-cnn", "mlp-784-1024-1024-10"])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--guards", nargs="*", default=["off", "skip"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for workload in (w for w in WORKLOADS if w.name in args.workloads):
        steps = args.steps if workload.batch_size <= 64 else max(200, args.steps // 5)
        for guard in args.guards:
            for _ in range(args.repeats):
                row = measure(workload, steps=steps, guard=guard)
                rows.append(row)
                print(
                    f"{row['workload']:<22} guard {guard:<4}  raw {row['raw_step_ms']:7.3f} ms  "
                    f"scaletrain {row['scaletrain_step_ms']:7.3f} ms  overhead "
                    f"{row['overhead_us']:6.0f} us  ratio {row['ratio']:.3f}",
                    flush=True,
                )
    save_results("overhead_cpu", rows)
    return rows


if __name__ == "__main__":
    main()
