"""Model FLOPs utilization: achieved training FLOP/s over the device's measured peak.

The peak is measured once per (device, dtype, torch version, threads) by a matmul and cached
in `~/.cache/scaletrain/peak_flops.json`, so later runs pay nothing and the first pays about two
seconds; within a process it is remembered too (also where the disk cache is skipped because
the CPU was oversubscribed: a second run in a notebook does not probe again). FLOPs per sample are counted analytically (`models.flops`: 2 per
multiply-add, training = 3x forward), so MFU = samples/s * FLOPs per sample / peak.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from scaletrain.fileio import atomic_write_json

CACHE = Path.home() / ".cache" / "scaletrain"
CACHE_FILE = CACHE / "peak_flops.json"
# (rows, inner, cols), cheapest first: squares and a batch-shaped product, ~2 s in all
CPU_SHAPES = [(256,) * 3, (512,) * 3, (256, 1024, 1024), (1024,) * 3, (2048,) * 3]
SLOW_PRODUCT_S = 0.5  # shapes predicted to take longer are skipped (emulated bf16)
CUDA_SIZE = 8192  # ~1 TFLOP: ~1 ms on an H100 in bf16, enough to reach its clocks
_MEASURED: dict[str, float] = {}  # this process's peaks, by cache key


def mfu(samples_per_s: float, flops_per_sample: int | None, peak: float | None) -> float | None:
    """Achieved / peak FLOP/s for one device (pass per-device samples/s)."""
    if not flops_per_sample or not peak:
        return None
    return samples_per_s * flops_per_sample / peak


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """Measured matmul FLOP/s on `device` in `dtype` (cached on disk after the first run).

    None where it cannot be measured (an unknown device type): the run reports no MFU.
    """
    if device.type not in ("cpu", "cuda"):
        return None
    key = "|".join(
        [_device_name(device), str(dtype), torch.__version__, str(torch.get_num_threads())]
    )
    if key in _MEASURED:
        return _MEASURED[key]
    cache = _read_cache()
    if key in cache:
        _MEASURED[key] = cache[key]
        return cache[key]
    value = _MEASURED[key] = measure_peak_flops(device, dtype)
    if device.type == "cuda" or not _cpu_oversubscribed():
        cache[key] = max(value, _read_cache().get(key, 0.0))  # a peak only ever rises
        _write_cache(cache)
    return value


def _cpu_oversubscribed() -> bool:
    """More runnable work than cores: a peak measured now would be too low for later runs
    (MFU above 1), so it is used for this run only and measured again next time."""
    try:
        return os.getloadavg()[0] > (os.cpu_count() or 1)
    except OSError:
        return False


def measure_peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """Best FLOP/s of matrix products, over the two kernels training uses and several shapes.

    `a @ b` and `linear(a, b)` (= a @ b.T) can take different kernels: on CPUs without bf16
    units, bf16 `mm` falls to a slow reference path while `linear` goes through oneDNN, ~10x
    apart. CPU BLAS speed also depends on the shape (a 256-row batch times a 1024-wide layer
    can beat a 2048 cube by 1.5x), so the peak is the best over square and batch-shaped
    products, each timed 3 times after a warm-up: the best the device offers in this dtype,
    as MFU's definition asks (a lower one would put MFU above 1).
    """
    kernels: list[Callable] = [torch.matmul, F.linear]
    if device.type == "cuda":
        return max(_flops_at(kernel, device, dtype, (CUDA_SIZE,) * 3, 10) for kernel in kernels)
    return max(_cpu_flops(kernel, device, dtype) for kernel in kernels)


def _cpu_flops(kernel: Callable, device: torch.device, dtype: torch.dtype) -> float:
    best = 0.0
    for rows, inner, cols in CPU_SHAPES:
        if best and 2 * rows * inner * cols / best > SLOW_PRODUCT_S:
            break  # larger products would only add seconds at this speed
        best = max(best, _flops_at(kernel, device, dtype, (rows, inner, cols), 3))
    return best


def _flops_at(
    kernel: Callable,
    device: torch.device,
    dtype: torch.dtype,
    shape: tuple[int, int, int],
    repeats: int,
) -> float:
    """Best FLOP/s of `repeats` timed products after a warm-up."""
    rows, inner, cols = shape
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(rows, inner, device=device, generator=generator).to(dtype)
    b = torch.randn(inner, cols, device=device, generator=generator).to(dtype)
    if kernel is F.linear:
        b = b.T.contiguous()  # linear(a, w) multiplies by w.T: the same product
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    kernel(a, b)  # warm-up: kernel selection, first-touch of the output
    sync()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        kernel(a, b)
        sync()
        best = min(best, time.perf_counter() - started)
    return 2 * rows * inner * cols / best


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu:{torch.backends.cpu.get_cpu_capability()}:{_cpu_model()}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            line = next((line for line in handle if line.startswith("model name")), "")
    except OSError:
        return "unknown"
    return line.partition(":")[2].strip() or "unknown"


def _read_cache() -> dict:
    try:
        return json.loads(CACHE_FILE.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _write_cache(cache: dict) -> None:
    """Atomic replace: concurrent ranks may write the same key; the last whole file wins."""
    with contextlib.suppress(OSError):  # a read-only home: measure again next run
        atomic_write_json(CACHE_FILE, cache, indent=1)
