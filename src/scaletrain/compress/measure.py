"""What the compress table reports of a model: parameters, bytes on disk, CPU latency."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from safetensors.torch import save
from torch import nn

from scaletrain.trained.quantized import stored_once

LATENCY_BATCHES = (1, 64)
LATENCY_THREADS = 2
WARMUP_BATCHES = 5


@dataclass(frozen=True)
class Measurement:
    nonzero: int  # nonzero parameters (of the float model before quantization)
    total: int
    disk_bytes: int  # the safetensors file of the weights
    latency_ms: dict[int, float]  # batch size -> median milliseconds per batch
    metric: float | None  # the test split's metric


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(nonzero, total) over the model's parameters."""
    params = [param.detach() for param in model.parameters()]
    return sum(int(p.count_nonzero()) for p in params), sum(p.numel() for p in params)


def safetensors_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """The size of these tensors as a safetensors file (header included); a tied weight (a
    GPT's head and embedding: one tensor under two names) counts once, as stored once."""
    return len(save(stored_once(tensors)))


def latency_ms(
    model: nn.Module, input_shape: tuple[int, ...], *, dtype: torch.dtype, repeats: int
) -> dict[int, float]:
    """Median CPU milliseconds per forward of batches of 1 and 64 (after warm-up), with
    `LATENCY_THREADS` threads and no autograd, on random inputs of the model's shape."""
    model = model.eval()
    generator = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(LATENCY_THREADS)
    try:
        return {
            batch: _median_ms(model, _example(batch, input_shape, dtype, generator), repeats)
            for batch in LATENCY_BATCHES
        }
    finally:
        torch.set_num_threads(threads)


def _example(batch: int, shape: tuple[int, ...], dtype: torch.dtype, generator) -> torch.Tensor:
    if dtype.is_floating_point:
        return torch.randn(batch, *shape, generator=generator, dtype=dtype)
    return torch.zeros(batch, *shape, dtype=dtype)  # token ids: 0 is always valid


def _median_ms(model: nn.Module, inputs: torch.Tensor, repeats: int) -> float:
    times = []
    with torch.inference_mode():
        for _ in range(WARMUP_BATCHES):  # allocator, kernels picked, caches filled
            model(inputs)
        for _ in range(repeats):
            started = time.perf_counter()
            model(inputs)
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000
