"""Preprocessing fit on the train split only, saved in the run dir and reapplied by eval/predict.

Two stages: an optional *encoder* (table columns, text, image files -> numbers; fit on train)
and *scaling* ``(inputs - shift) / scale`` per feature (per channel for images). Both go into
``preprocess.json``, so predict turns raw files into exactly the tensors the model saw.
Regression targets may be standardized too (``target``); ``inverse_target`` turns outputs
back into the original units (a run directory without it: outputs are already in them).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np
import torch

from scaletrain.data.raw import InputsFile
from scaletrain.data.transforms.image import ImageDecoder
from scaletrain.data.transforms.stats import RunningMoments
from scaletrain.data.transforms.table import TableEncoder
from scaletrain.data.transforms.target import TargetScaler
from scaletrain.data.transforms.text import TextEncoder

Method = Literal["standardize", "minmax", "none"]


def encoder_from_state(state: dict | None) -> Any:
    """Rebuild a table/text/image encoder from its ``state_dict`` (None stays None)."""
    if state is None:
        return None
    classes = {"table": TableEncoder, "text": TextEncoder, "image": ImageDecoder}
    return classes[state["kind"]].from_state_dict(state)


def _check_header(state: dict) -> None:
    """A saved state's method, flag and shape: what an edited file changes is a ValueError
    (the reader names the file), never a silent other scaling."""
    if state["method"] not in get_args(Method) or type(state["is_image"]) is not bool:
        raise ValueError(f"method {state['method']!r}, is_image {state['is_image']!r}")
    if state["method"] != "none":
        shape = state["shape"]
        if not (isinstance(shape, list) and all(type(n) is int and n >= 1 for n in shape)):
            raise ValueError(f"shape must be a list of positive sizes, got {shape!r:.40}")


def _statistic(state: dict, key: str) -> torch.Tensor:
    """`shift` or `scale`: finite numbers, as many as the shape holds (not broadcast)."""
    values = torch.tensor(state[key], dtype=torch.float64)
    if values.ndim != 1 or values.numel() != int(np.prod(state["shape"])):
        raise ValueError(f"{key} holds {values.numel()} numbers; shape {state['shape']}")
    if not torch.isfinite(values).all():
        raise ValueError(f"{key} holds a number that is not finite")
    return values.reshape(state["shape"])


class Preprocessor:
    """Encoder (optional) then ``(inputs - shift) / scale`` with train-split statistics."""

    def __init__(
        self,
        method: Method,
        *,
        shift: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
        is_image: bool = False,
        encoder: Any = None,
        target: TargetScaler | None = None,
    ):
        assert (method == "none") == (shift is None), "statistics exactly when scaling"
        self.method = method
        self.is_image = is_image
        self.shift = shift  # float64, broadcastable against one sample
        self.scale = scale
        self.encoder = encoder  # TableEncoder | TextEncoder | ImageDecoder | None
        self.target = target  # regression targets' standardization, or None
        self._cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def fit(
        cls,
        cfg_normalize: Method,
        train_inputs: torch.Tensor,
        *,
        is_image: bool,
        num_scaled: int | None = None,
        encoder: Any = None,
    ) -> Preprocessor:
        """Statistics of the train inputs in float64; a constant feature gets scale 1.

        ``num_scaled`` limits scaling to the leading features (a table's numbers, not its
        one-hot or index columns, which get shift 0 and scale 1).
        """
        if cfg_normalize == "none":
            return cls("none", is_image=is_image, encoder=encoder)
        moments = RunningMoments(is_image=is_image, num_scaled=num_scaled)
        moments.update(train_inputs)
        return cls.from_moments(
            cfg_normalize, moments, num_features=train_inputs.shape[1], encoder=encoder
        )

    @classmethod
    def from_moments(
        cls, method: Method, moments: RunningMoments, *, num_features: int, encoder: Any = None
    ) -> Preprocessor:
        """Scaling from streamed statistics (a pass over shards)."""
        if method == "none" or moments.count == 0:
            return cls("none", is_image=moments.is_image, encoder=encoder)
        extra = num_features if moments.num_scaled is not None else None
        shift, scale = moments.shift_scale(method, num_features=extra)
        return cls(method, shift=shift, scale=scale, is_image=moments.is_image, encoder=encoder)

    def encode(self, raw: Any) -> torch.Tensor:
        """Raw samples (RawTable, RawTexts, RawImages) -> unscaled tensor, via the encoder."""
        if isinstance(raw, torch.Tensor):
            return raw
        if isinstance(raw, np.ndarray):
            return torch.from_numpy(raw)
        assert self.encoder is not None, f"no encoder for raw inputs {type(raw).__name__}"
        if isinstance(raw, InputsFile):
            raw = self.encoder.read(raw.path)  # a predict file: read as the encoder was fit
        return torch.from_numpy(np.ascontiguousarray(self.encoder.encode(raw)))

    def transform(self, inputs: Any) -> torch.Tensor:
        """Scaled float32 inputs on the inputs' device; raw samples are encoded first."""
        inputs = self.encode(inputs)
        if self.method == "none":
            return inputs
        shift, scale = self._on(inputs.device)
        return (inputs.to(torch.float32) - shift) / scale

    def transform_target(self, targets: torch.Tensor) -> torch.Tensor:
        """Regression targets as the model trained on them (standardized where
        `data.normalize_target` scaled them; unchanged otherwise)."""
        return targets if self.target is None else self.target.transform(targets)

    def inverse_target(self, values: torch.Tensor) -> torch.Tensor:
        """Regression outputs in the targets' original units (float64 where standardized;
        unchanged where the targets were not)."""
        return values if self.target is None else self.target.inverse(values)

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # Cached so per-batch transforms on an accelerator copy the statistics once.
        if device not in self._cache:
            self._cache[device] = (
                self.shift.to(device=device, dtype=torch.float32),
                self.scale.to(device=device, dtype=torch.float32),
            )
        return self._cache[device]

    def state_dict(self) -> dict:
        """JSON-safe: method, flag, flat lists of floats with their shape, the encoder."""
        state: dict = {"method": self.method, "is_image": self.is_image}
        if self.method != "none":
            state["shape"] = list(self.shift.shape)
            state["shift"] = self.shift.flatten().tolist()
            state["scale"] = self.scale.flatten().tolist()
        if self.encoder is not None:
            state["encoder"] = self.encoder.state_dict()
        if self.target is not None:
            state["target"] = self.target.state_dict()
        return state

    @classmethod
    def from_state_dict(cls, state: dict) -> Preprocessor:
        """Rebuild exactly what ``state_dict`` saved."""
        encoder = encoder_from_state(state.get("encoder"))
        target = state.get("target")  # absent in run directories from before it existed
        target = None if target is None else TargetScaler.from_state_dict(target)
        _check_header(state)
        if state["method"] == "none":
            return cls("none", is_image=state["is_image"], encoder=encoder, target=target)
        shift = _statistic(state, "shift")
        scale = _statistic(state, "scale")
        return cls(
            state["method"],
            shift=shift,
            scale=scale,
            is_image=state["is_image"],
            encoder=encoder,
            target=target,
        )

    def __repr__(self) -> str:
        kind = self.encoder.kind if self.encoder is not None else None
        return f"Preprocessor({self.method!r}, is_image={self.is_image}, encoder={kind!r})"
