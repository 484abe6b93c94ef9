"""The hand-written PyTorch loop scaletrain is measured against: the same work, no framework.

Only the sample order is shared with scaletrain (`epoch_order`, the documented contract that
the order of an epoch is a function of the seed alone), so the comparison is step for step.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from scaletrain.data import epoch_order


@dataclass
class RawResult:
    model: nn.Module
    step_seconds: list[float] = field(default_factory=list)


def raw_train(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    bf16: bool = False,
    channels_last: bool = False,
) -> RawResult:
    """AdamW (fused) + cross-entropy, optionally under bf16 autocast, `steps` optimizer steps.

    Runs on the device of `inputs`; on CUDA each step is synchronized so its time is real.
    """
    device = inputs.device
    model = model.to(device)
    if channels_last:  # as scaletrain's `train.channels_last: auto` does for CPU CNNs
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, fused=True)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    )
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    result = RawResult(model)
    num_samples, epoch, position = len(inputs), 0, 0
    order = epoch_order(num_samples, seed=seed, epoch=epoch, shuffle=True).to(device)
    for _ in range(steps):
        if position >= num_samples:  # a last partial batch, as scaletrain's default
            epoch, position = epoch + 1, 0
            order = epoch_order(num_samples, seed=seed, epoch=epoch, shuffle=True).to(device)
        started = time.perf_counter()
        index = order[position : position + batch_size]
        position += batch_size
        batch = inputs[index]
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with autocast:
            loss = F.cross_entropy(model(batch), targets[index])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        result.step_seconds.append(time.perf_counter() - started)
    return result


def scaletrain_config(
    *,
    name: str,
    out_dir: str,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    precision: str = "32",
    device: str = "cpu",
    guard: str = "off",
) -> dict:
    """The scaletrain config doing the same work as `raw_train` (no eval, no extra saves;
    `guard="off"`: no per-step finite check, which the raw loop does not do either)."""
    return {
        "run": {"name": name, "seed": seed, "out_dir": out_dir},
        "data": {"val_fraction": 0.0, "test_fraction": 0.0, "normalize": "none"},
        "optim": {"name": "adamw", "lr": lr, "weight_decay": 0.0, "implementation": "fused"},
        "train": {
            "max_steps": steps,
            "batch_size": batch_size,
            "precision": precision,
            "device": device,
            "guard": {"nonfinite": guard},
        },
        "checkpoint": {"every_epochs": 0, "save_best": False},
        "log": {"every_steps": 50, "progress": False, "tensorboard": False, "report": False},
    }
