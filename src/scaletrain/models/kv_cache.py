"""The key/value cache of a GPT for generation: per-layer preallocated tensors and one length.

``GPT.new_cache(batch_size, max_length)`` makes one; ``GPT.forward(ids, cache)`` writes the
new tokens' keys and values at positions ``cache.length..`` of every layer, attends over all
cached positions and then advances ``cache.length`` once, after the last layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from scaletrain.errors import UserError


@dataclass
class LayerKV:
    """One layer's view of the cache for one forward: where the new tokens go."""

    keys: Tensor  # (B, heads, max_length, head_dim)
    values: Tensor
    start: int  # absolute position of the first new token

    def append(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Store (B, heads, T, head_dim) at ``start..start+T``; return everything up to there."""
        end = self.start + keys.shape[2]
        self.keys[:, :, self.start : end] = keys
        self.values[:, :, self.start : end] = values
        return self.keys[:, :, :end], self.values[:, :, :end]


class KVCache:
    """Keys and values of every layer for up to ``max_length`` positions of ``batch_size`` rows."""

    def __init__(
        self,
        *,
        num_layers: int,
        batch_size: int,
        num_heads: int,
        max_length: int,
        head_dim: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        shape = (batch_size, num_heads, max_length, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.batch_size, self.max_length = batch_size, max_length
        self.length = 0  # positions filled so far (the same in every layer)

    def layer(self, index: int) -> LayerKV:
        return LayerKV(self.keys[index], self.values[index], self.length)

    def check_room(self, batch_size: int, num_new: int) -> None:
        """Refuse a call that would write past ``max_length`` or has another batch size."""
        if batch_size != self.batch_size:
            raise UserError(
                f"KV cache: made for batch size {self.batch_size}, got token ids of batch size "
                f"{batch_size}; make a new cache with GPT.new_cache({batch_size}, max_length)"
            )
        if self.length + num_new > self.max_length:
            raise UserError(
                f"KV cache: {self.length} cached + {num_new} new tokens exceed its max_length "
                f"{self.max_length}; make a larger cache (at most model.context) or stop earlier"
            )
