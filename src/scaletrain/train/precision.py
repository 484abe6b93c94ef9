"""Precision by name (Fabric's vocabulary) -> one frozen object that owns every dtype decision:
autocast, input casts, parameter dtype and the fp16 grad scaler."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn

from scaletrain.errors import ConfigError


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
    def from_config(cls, name: str, device: torch.device) -> Precision:
        """The only reader of `train.precision`; `auto` picks bf16-mixed where bf16 is fast."""
        if name == "auto":
            name = "bf16-mixed" if has_fast_bf16(device) else "32"
        if name == "16-mixed" and device.type != "cuda":
            raise ConfigError("train.precision: `16-mixed` needs a CUDA device; use `bf16-mixed`")
        autocast = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(name)
        param = torch.bfloat16 if name == "bf16-true" else torch.float32
        scaler = torch.amp.GradScaler("cuda") if name == "16-mixed" else None
        return cls(name, device.type, autocast, param, scaler)


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
