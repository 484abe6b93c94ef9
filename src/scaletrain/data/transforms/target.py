"""Regression targets standardized with train-split statistics (``data.normalize_target``).

The model trains on ``(y - mean) / std``, so a target in the hundreds (diabetes: 25-346)
does not meet a freshly initialized model's outputs near 0 with huge gradients; predictions
and metrics are turned back into the original units with ``inverse``. Statistics are float64
and stored in ``preprocess.json`` beside the input scaling.
"""

from __future__ import annotations

import torch


class TargetScaler:
    """``(y - shift) / scale`` per target column; ``inverse`` undoes it."""

    def __init__(self, shift: torch.Tensor, scale: torch.Tensor):
        self.shift = shift  # float64, () for one target column, (k,) for k
        self.scale = scale
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def fit(cls, train_targets: torch.Tensor) -> TargetScaler:
        """Mean and population std of the train targets in float64; a constant column keeps
        scale 1 (it cannot be standardized, only centred)."""
        values = train_targets.to(torch.float64)
        shift = values.mean(dim=0)
        scale = values.std(dim=0, correction=0)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return cls(shift, scale)

    def transform(self, targets: torch.Tensor) -> torch.Tensor:
        """Standardized targets, in the targets' floating dtype (float32 for int input)."""
        dtype = targets.dtype if targets.is_floating_point() else torch.float32
        shift, scale = self._on(targets.device, torch.float64)
        return ((targets.to(torch.float64) - shift) / scale).to(dtype)

    def inverse(self, values: torch.Tensor) -> torch.Tensor:
        """Model outputs (or standardized targets) back in the original units, float64 where
        the device has it; ``(B, 1)`` outputs of a one-column target broadcast as they are."""
        dtype = torch.float32 if values.device.type == "mps" else torch.float64
        shift, scale = self._on(values.device, dtype)
        return values.to(dtype) * scale + shift

    def scale_on(self, device: torch.device) -> torch.Tensor:
        """The float32 scale on `device` (the epoch's training MAE in original units)."""
        return self._on(device, torch.float32)[1]

    def _on(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # cached so per-batch inverses on an accelerator copy the statistics once
        key = (device, dtype)
        if key not in self._cache:
            self._cache[key] = (
                self.shift.to(device=device, dtype=dtype),
                self.scale.to(device=device, dtype=dtype),
            )
        return self._cache[key]

    def state_dict(self) -> dict:
        """JSON-safe: the method, the shape and flat float lists (float64 round-trips exactly)."""
        return {
            "method": "standardize",
            "shape": list(self.shift.shape),
            "shift": self.shift.flatten().tolist(),
            "scale": self.scale.flatten().tolist(),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> TargetScaler:
        """Inverse of ``state_dict``."""
        if state["method"] != "standardize":
            raise ValueError(f"target method {str(state['method'])[:40]!r} is not standardize")
        shape = state["shape"]
        shift = torch.tensor(state["shift"], dtype=torch.float64).reshape(shape)
        scale = torch.tensor(state["scale"], dtype=torch.float64).reshape(shape)
        if not bool((scale > 0).all()):
            raise ValueError("target scale must be > 0")
        return cls(shift, scale)
