"""Precision by name (Fabric's vocabulary) -> one frozen object that owns every dtype decision:
autocast, input casts, parameter dtype and the fp16 grad scaler."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import torch
from torch import nn

from scaletrain.errors import ConfigError
from scaletrain.models import forward_flops_per_layer

if TYPE_CHECKING:
    from scaletrain.data import DataSpec

# `auto` on a CPU: below this many forward FLOPs per product layer and step, bf16 autocast's
# casts cost more than its faster products save (bench/precision_auto.py, AVX512-BF16: bf16
# takes 1.17-1.19x fp32's step at 3.6-5 MFLOP, 0.94-1.04x at 11-12, 0.54-0.84x from 13 on)
CPU_BF16_MIN_LAYER_FLOPS = 10e6


@dataclass(frozen=True)
class Precision:
    name: str
    device_type: str
    autocast_dtype: torch.dtype | None
    param_dtype: torch.dtype
    scaler: torch.amp.GradScaler | None

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype matmuls run in (what the MFU peak is measured for)."""
        return self.autocast_dtype or self.param_dtype

    @property
    def checks_gradients(self) -> bool:
        """Without a scaler, finding non-finite gradients is the guard's job (the scaler
        skips such steps itself)."""
        return self.scaler is None

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Parameters and buffers in the parameter dtype (bf16-true); fp32 otherwise."""
        return model.to(dtype=self.param_dtype)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast_dtype)

    def cast_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """Floating inputs in the parameter dtype (bf16-true has no autocast to do it)."""
        if self.param_dtype != torch.float32 and inputs.is_floating_point():
            return inputs.to(self.param_dtype)
        return inputs

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Gradients in true units before clipping, the guard and the update."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer update; under a scaler skipped when it found infs, then rescaled."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    @classmethod
    def from_config(
        cls,
        name: str,
        device: torch.device,
        *,
        layer_flops: Callable[[], float | None] | None = None,
    ) -> Precision:
        """The only reader of `train.precision`; `auto` picks bf16-mixed where bf16 is fast
        and, on a CPU, where `layer_flops()` (forward FLOPs per product layer and step; not
        asked elsewhere) says the products are large enough for it to pay."""
        if name == "auto":
            name = "bf16-mixed" if _bf16_pays(device, layer_flops) else "32"
        if name == "16-mixed" and device.type != "cuda":
            raise ConfigError("train.precision: `16-mixed` needs a CUDA device; use `bf16-mixed`")
        autocast = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(name)
        param = torch.bfloat16 if name == "bf16-true" else torch.float32
        scaler = torch.amp.GradScaler("cuda") if name == "16-mixed" else None
        return cls(name, device.type, autocast, param, scaler)


def run_precision(
    name: str, device: torch.device, *, model: nn.Module, spec: DataSpec, batch_size: int
) -> Precision:
    """`train.precision` for this model at the run's batch size (`train.batch_size`, so the
    answer is the same when training on any number of processes and when a run is reloaded
    for evaluation or prediction)."""

    def layer_flops() -> float | None:
        per_sample = forward_flops_per_layer(model, spec.input_shape, spec.input_dtype)
        return None if per_sample is None else per_sample * batch_size

    return Precision.from_config(name, device, layer_flops=layer_flops)


def _bf16_pays(device: torch.device, layer_flops: Callable[[], float | None] | None) -> bool:
    if not has_fast_bf16(device):
        return False
    if device.type != "cpu" or layer_flops is None:
        return True
    flops = layer_flops()
    return flops is None or flops >= CPU_BF16_MIN_LAYER_FLOPS


def has_fast_bf16(device: torch.device) -> bool:
    """CUDA sm80+, or a CPU with AMX / AVX512-BF16 (bf16 matmuls ~5x fp32 there)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported() and torch.cuda.get_device_capability(device)[0] >= 8
    return _cpu_has_bf16_units()


@cache
def _cpu_has_bf16_units() -> bool:
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags
