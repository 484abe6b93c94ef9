"""Input scaling fit on the train split only, saved in the run dir and reapplied by eval/predict."""

from __future__ import annotations

from typing import Literal

import torch

Method = Literal["standardize", "minmax", "none"]


class Preprocessor:
    """``(inputs - shift) / scale`` with per-feature (per-channel for images) statistics."""

    def __init__(
        self,
        method: Method,
        *,
        shift: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
        is_image: bool = False,
    ):
        assert (method == "none") == (shift is None), "statistics exactly when scaling"
        self.method = method
        self.is_image = is_image
        self.shift = shift  # float64, broadcastable against one sample
        self.scale = scale
        self._cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def fit(
        cls, cfg_normalize: Method, train_inputs: torch.Tensor, *, is_image: bool
    ) -> Preprocessor:
        """Statistics of the train inputs in float64; a constant feature gets scale 1."""
        if cfg_normalize == "none":
            return cls("none", is_image=is_image)
        values = train_inputs.to(torch.float64)
        # Images share one statistic per channel (dim 1); tables keep one per feature.
        dims = [0, *range(2, values.ndim)] if is_image else [0]
        if cfg_normalize == "standardize":
            scale, shift = torch.std_mean(values, dim=dims, correction=0, keepdim=True)
        else:
            shift = values.amin(dim=dims, keepdim=True)
            scale = values.amax(dim=dims, keepdim=True) - shift
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return cls(cfg_normalize, shift=shift[0], scale=scale[0], is_image=is_image)

    def transform(self, inputs: torch.Tensor) -> torch.Tensor:
        """Scaled float32 inputs on the inputs' device; identity for ``none``."""
        if self.method == "none":
            return inputs
        shift, scale = self._on(inputs.device)
        return (inputs.to(torch.float32) - shift) / scale

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # Cached so per-batch transforms on an accelerator copy the statistics once.
        if device not in self._cache:
            self._cache[device] = (
                self.shift.to(device=device, dtype=torch.float32),
                self.scale.to(device=device, dtype=torch.float32),
            )
        return self._cache[device]

    def state_dict(self) -> dict:
        """JSON-safe: method, flag and flat lists of floats with their shape."""
        state: dict = {"method": self.method, "is_image": self.is_image}
        if self.method != "none":
            state["shape"] = list(self.shift.shape)
            state["shift"] = self.shift.flatten().tolist()
            state["scale"] = self.scale.flatten().tolist()
        return state

    @classmethod
    def from_state_dict(cls, state: dict) -> Preprocessor:
        """Rebuild exactly what ``state_dict`` saved."""
        if state["method"] == "none":
            return cls("none", is_image=state["is_image"])
        shape = state["shape"]
        shift = torch.tensor(state["shift"], dtype=torch.float64).reshape(shape)
        scale = torch.tensor(state["scale"], dtype=torch.float64).reshape(shape)
        return cls(state["method"], shift=shift, scale=scale, is_image=state["is_image"])

    def __repr__(self) -> str:
        return f"Preprocessor({self.method!r}, is_image={self.is_image})"
