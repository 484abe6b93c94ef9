"""Moving tensors between a store's backing and the optimizer: one update, reads, writes.

Without a window every parameter is stepped at once by one optimizer over the backing's own
tensors (one `optimizer.step()` per update, as a single process would). With a window each
parameter is stepped alone, in chunks of at most the window where the optimizer allows it,
and each tensor is mapped only for its chunk's step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from scaletrain.parallel.ps.backing import (
    PARAM,
    MappedShards,
    RamShards,
    chunk_ranges,
    window_numel,
)
from scaletrain.parallel.ps.layout import ParamEntry, TensorSpec, decode_scalar, encode_scalar
from scaletrain.parallel.ps.param_step import OptimizerTemplate


class ShardUpdater:
    """Applies updates to, and copies tensors out of and into, one store's backing."""

    def __init__(
        self,
        backing: RamShards | MappedShards,
        template: OptimizerTemplate,
        *,
        window_bytes: int | None,
    ):
        self.backing = backing
        self.template = template
        self.window_bytes = window_bytes

    def apply(
        self,
        entries: list[ParamEntry],
        committed: list[ParamEntry],
        grads: Mapping[str, torch.Tensor],
        indices: list[int],
        *,
        scale: float,
        lr: float | None,
    ) -> None:
        """Step the parameters `indices` in place from their gradients in `grads` (by name).

        All at once when the gradients can be used as they are (no window, no scale, the
        parameters' dtype, contiguous); else parameter by parameter, each gradient fetched,
        converted and scaled only when its parameter is stepped, so the temporaries are never
        more than one parameter (or window) in size."""
        for index in indices:
            self.backing.begin_write(index, committed[index])
        if self.window_bytes is None and scale == 1.0:
            updates = [(index, grads[entries[index].name]) for index in indices]
            if all(_usable_as_is(grad, entries[index].spec) for index, grad in updates):
                self._apply_whole(entries, updates, lr=lr)
                return
            del updates
        for index in indices:  # no name holds a gradient past its parameter's step
            self._apply_chunked(index, entries[index], grads[entries[index].name], scale, lr)

    def read(self, index: int, entry: ParamEntry, key: str) -> torch.Tensor:
        """A copy in RAM of one stored tensor, read window by window."""
        spec = entry.spec if key == PARAM else entry.tensors[key]
        out = torch.empty(spec.shape, dtype=spec.dtype)
        flat = out.view(-1)
        for start, count in self._chunks_of(spec):
            piece = self.backing.view(index, key, spec, start, count)
            flat[start : start + count].copy_(piece.reshape(-1))
        return out

    def write(self, index: int, key: str, spec: TensorSpec, value: torch.Tensor) -> None:
        """Overwrite one stored tensor (the parameter's working copy) window by window."""
        flat = value.detach().reshape(-1).to(spec.dtype)
        for start, count in self._chunks_of(spec):
            target = self.backing.view(index, key, spec, start, count)
            target.copy_(flat[start : start + count].view(target.shape))

    def store_state_tensor(
        self,
        index: int,
        entry: ParamEntry,
        key: str,
        value: torch.Tensor,
        *,
        start: int = 0,
        chunked: bool = False,
    ) -> None:
        """A state tensor after a step: already in place in its file, or copied there.
        `chunked`: `value` is the piece at `start` of an elementwise (parameter-shaped) state."""
        if key not in entry.tensors:
            shape = entry.spec.shape if chunked else tuple(value.shape)
            entry.tensors[key] = TensorSpec(value.dtype, shape)
            self.backing.create(index, key, entry.tensors[key])
        target = self.backing.view(index, key, entry.tensors[key], start, value.numel())
        if target.data_ptr() != value.data_ptr():
            target.copy_(value.view(target.shape))

    def _apply_whole(self, entries, updates, *, lr: float | None) -> None:
        indices = [index for index, _ in updates]
        params, grads, states = [], [], []
        for index, grad in updates:
            entry = entries[index]
            params.append(self.backing.view(index, PARAM, entry.spec, 0, entry.spec.numel))
            grads.append(grad.detach().view(entry.spec.shape))
            states.append(self._load_state(index, entry, 0, entry.spec.numel))
        new_states = self.template.step(indices, params, grads, states, lr=lr)
        for index, new_state in zip(indices, new_states, strict=True):
            entries[index].scalars = self._save_state(index, entries[index], new_state)

    def _apply_chunked(self, index, entry: ParamEntry, grad, scale, lr) -> None:
        grad = _prepare(grad, entry.spec, scale)
        fresh = not (entry.tensors or entry.scalars)  # the optimizer initializes its state
        scalars = entry.scalars
        chunks = self._chunks(entry)
        for start, count in chunks:
            param = self.backing.view(index, PARAM, entry.spec, start, count)
            state = {} if fresh else self._load_state(index, entry, start, count)
            piece = grad[start : start + count].view(param.shape)
            [new_state] = self.template.step([index], [param], [piece], [state], lr=lr, keep=False)
            scalars = self._save_state(index, entry, new_state, start, chunked=len(chunks) > 1)
            del param, state, piece, new_state  # unmapped and freed before the next window
        entry.scalars = scalars  # the last chunk's: every chunk started from the same ones

    def _load_state(self, index: int, entry: ParamEntry, start: int, count: int) -> dict:
        whole = count == entry.spec.numel  # else a chunk: elementwise, state shaped alike
        state: dict[str, Any] = {
            key: self.backing.view(
                index, key, spec, *((0, spec.numel) if whole else (start, count))
            )
            for key, spec in entry.tensors.items()
        }
        # fresh tensors for every chunk: each must start from the same step count
        state.update({key: decode_scalar(value) for key, value in entry.scalars.items()})
        return state

    def _save_state(self, index, entry: ParamEntry, state: dict, start=0, *, chunked=False):
        scalars = {}
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                self.store_state_tensor(index, entry, key, value, start=start, chunked=chunked)
            else:
                scalars[key] = encode_scalar(value)
        return scalars

    def _chunks(self, entry: ParamEntry) -> list[tuple[int, int]]:
        if not self.template.elementwise:
            return [(0, entry.spec.numel)]
        return self._chunks_of(entry.spec)

    def _chunks_of(self, spec: TensorSpec) -> list[tuple[int, int]]:
        return chunk_ranges(spec.numel, window_numel(self.window_bytes, spec.dtype))


def _usable_as_is(grad: torch.Tensor, spec: TensorSpec) -> bool:
    return grad.dtype == spec.dtype and grad.device.type == "cpu" and grad.is_contiguous()


def _prepare(grad: torch.Tensor, spec: TensorSpec, scale: float) -> torch.Tensor:
    """The gradient flat, in the parameter's dtype, times `scale`."""
    grad = grad.detach().reshape(-1).to("cpu", spec.dtype)  # a server's store lives in host memory
    return grad * scale if scale != 1.0 else grad  # the one parameter-sized temporary


def checked_indices(
    grads: Mapping[str, torch.Tensor], index_of: dict[str, int], entries: list[ParamEntry]
) -> list[int]:
    """The indices `grads` names, in store order, every name and shape checked before any
    write (a torn update in a live process would go unnoticed until the next commit)."""
    unknown = [name for name in grads if name not in index_of]
    if unknown:
        raise ValueError(f"this server holds no parameters named {unknown}")
    indices = sorted(index_of[name] for name in grads)
    for index in indices:
        shape = tuple(grads[entries[index].name].shape)
        if shape != entries[index].spec.shape:
            raise ValueError(
                f"gradient of {entries[index].name} has shape {list(shape)}, "
                f"expected {list(entries[index].spec.shape)}"
            )
    return indices
