"""Streaming feature statistics: mean, std, min and max merged chunk by chunk in float64.

One chunk (the whole train split in memory) gives the textbook two-pass values; many chunks
(a pass over the train shards) merge with Chan et al.'s parallel update, so preparing shards
never holds the split in memory. Images keep one statistic per channel, tables per feature.
"""

from __future__ import annotations

import numpy as np
import torch


class RunningMoments:
    """Count, mean, sum of squared deviations, min and max of the chunks seen so far."""

    def __init__(self, *, is_image: bool, num_scaled: int | None = None):
        self.is_image = is_image
        self.num_scaled = num_scaled  # tables: only the leading numeric columns get statistics
        self.count = 0
        self.mean: torch.Tensor | None = None  # float64, shaped like one sample's broadcast
        self.m2: torch.Tensor | None = None
        self.minimum: torch.Tensor | None = None
        self.maximum: torch.Tensor | None = None

    def update(self, chunk: torch.Tensor | np.ndarray) -> None:
        """Fold in a chunk of samples (n, *sample_shape)."""
        values = torch.as_tensor(chunk).to(torch.float64)
        if self.num_scaled is not None:
            values = values[:, : self.num_scaled]
        dims = [0, *range(2, values.ndim)] if self.is_image else [0]
        if len(values) == 0:
            return
        # Images pool every pixel of a channel; tables count samples.
        count = values.numel() // values.shape[1] if self.is_image else len(values)
        # numpy, not torch: torch splits a float64 sum over threads, so 1 and 2 threads (a
        # torchrun worker has 1) differed in the last bit of an image's m2, and a teacher's
        # preprocess.json then no longer equalled its DDP student's (distill.teacher)
        array, axes = values.numpy(), tuple(dims)
        mean = torch.from_numpy(array.mean(axis=axes, keepdims=True)[0])
        m2 = torch.from_numpy(((array - mean.numpy()) ** 2).sum(axis=axes, keepdims=True)[0])
        low = values.amin(dim=dims, keepdim=True)[0]
        high = values.amax(dim=dims, keepdim=True)[0]
        if self.count == 0:
            self.count, self.mean, self.m2, self.minimum, self.maximum = count, mean, m2, low, high
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * count / total)
        self.minimum = torch.minimum(self.minimum, low)
        self.maximum = torch.maximum(self.maximum, high)
        self.count = total

    def shift_scale(self, method: str, *, num_features: int | None = None):
        """(shift, scale) float64 for standardize/minmax; unscaled trailing columns get 0/1."""
        assert self.count > 0, "statistics of an empty split"
        if method == "standardize":
            shift, scale = self.mean, (self.m2 / self.count).sqrt()
        else:
            shift, scale = self.minimum, self.maximum - self.minimum
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        if num_features is not None and num_features > shift.shape[0]:
            extra = num_features - shift.shape[0]
            shift = torch.cat([shift, torch.zeros(extra, dtype=torch.float64)])
            scale = torch.cat([scale, torch.ones(extra, dtype=torch.float64)])
        return shift, scale

    def to_dict(self) -> dict:
        """JSON-safe (stored in a shard manifest)."""
        if self.count == 0:
            return {"count": 0}
        return {
            "count": self.count,
            "is_image": self.is_image,
            "num_scaled": self.num_scaled,
            "shape": list(self.mean.shape),
            **{
                name: getattr(self, name).flatten().tolist()
                for name in ("mean", "m2", "minimum", "maximum")
            },
        }

    @classmethod
    def from_dict(cls, state: dict) -> RunningMoments:
        """Inverse of ``to_dict``."""
        moments = cls(is_image=state.get("is_image", False), num_scaled=state.get("num_scaled"))
        moments.count = state["count"]
        if moments.count:
            for name in ("mean", "m2", "minimum", "maximum"):
                values = torch.tensor(state[name], dtype=torch.float64)
                setattr(moments, name, values.reshape(state["shape"]))
        return moments
