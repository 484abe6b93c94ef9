"""Measure what the memory planner needs: parameter sizes, block sizes, activation bytes.

Activations are measured, not guessed: one forward and backward of the real model on
the *meta* device (shapes only, no memory, no RNG or buffer side effects) while a
saved-tensor hook sums the bytes autograd keeps for backward, attributed to the block
that was running. Then the peak reading of a real run, for comparing with the estimate.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.graph import saved_tensors_hooks
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence
from torch.overrides import TorchFunctionMode

from scaletrain.parallel.memory_backward import (
    LiveBytes,
    backward_peak_bytes,
    recurrent_backward_bytes,
)

_MB = 2**20


@dataclass(frozen=True)
class ModelFacts:
    """Sizes in bytes for one micro batch; the planner combines them per strategy."""

    param_bytes: int
    buffer_bytes: int
    block_param_bytes: tuple[int, ...]  # one entry per block (FSDP unit)
    saved_bytes: int  # all activations autograd keeps, outside and inside blocks
    block_saved_bytes: tuple[int, ...]  # the share of `saved_bytes` inside each block
    block_input_bytes: tuple[int, ...]  # what a checkpointed block keeps instead
    block_recompute_bytes: tuple[int, ...]  # saved in the block, less its (kept) input
    largest_saved_bytes: int  # one tensor: backward briefly holds its gradient too
    micro_batch_size: int
    # gradient buffers a recurrent layer's backward allocates beyond its saved tensors
    # (`recurrent_backward_bytes`); the planner takes the larger of this and the above
    recurrent_backward_bytes: int = 0
    # the model's output in fp32: what the loss keeps (log-probabilities) until backward,
    # and the size of their gradient; a language model's logits make this large
    output_fp32_bytes: int = 0
    # activations alive at the worst moment of backward (`memory_backward`), replayed only
    # where blocks share an input; 0 elsewhere (a chain of blocks: the terms above hold)
    peak_live_bytes: int = 0

    @property
    def root_param_bytes(self) -> int:
        """Parameters outside every block: FSDP's root unit."""
        return self.param_bytes - sum(self.block_param_bytes)


def measure_model(
    model: nn.Module,
    *,
    blocks: list[nn.Module],
    example_input: torch.Tensor | None,
    compute_dtype: torch.dtype | None = None,
) -> ModelFacts:
    """Sizes of `model` and of one forward/backward on a batch shaped like `example_input`.

    Args:
        model: the unwrapped model (left untouched: its tensors are swapped for meta ones).
        blocks: the units FSDP shards / checkpointing recomputes, as `find_blocks` returns.
        example_input: one micro batch (only its shape and dtype are read); without it,
            activations count as zero.
        compute_dtype: autocast's dtype; the meta pass runs in it (meta has no autocast).
    """
    params = dict(model.named_parameters())
    param_ids = {id(param) for param in params.values()}
    saved = _SavedTensorCounter(model, blocks, param_ids)
    peak_live = 0
    if example_input is not None:
        meta_state = _meta_state(model, compute_dtype)
        saved.param_ids |= {id(tensor) for tensor in meta_state.values()}
        inputs = torch.empty_like(example_input, device="meta")
        if compute_dtype is not None and inputs.is_floating_point():
            inputs = inputs.to(compute_dtype)
        with saved.hooks(), _FusedAttention(), saved_tensors_hooks(saved.pack, saved.unpack):
            output = functional_call(model, meta_state, (inputs,))
        if saved.blocks_share_an_input():  # parallel branches: replay backward (costs a pass)
            # it starts from the saved tensors and frees each after its use, as on a device
            live = LiveBytes(ignore=[*meta_state.values(), inputs], alive=saved.release())
            peak_live = backward_peak_bytes(output, list(meta_state.values()), live)
        output = output[0] if isinstance(output, tuple | list) else output
        if torch.is_tensor(output):
            saved.output_fp32 = output.numel() * 4
    return ModelFacts(
        param_bytes=sum(_nbytes(param) for param in params.values()),
        buffer_bytes=sum(_nbytes(buffer) for buffer in model.buffers()),
        block_param_bytes=tuple(sum(_nbytes(p) for p in block.parameters()) for block in blocks),
        saved_bytes=saved.total,
        block_saved_bytes=tuple(saved.per_block),
        block_input_bytes=tuple(saved.block_inputs),
        block_recompute_bytes=tuple(
            total - own for total, own in zip(saved.per_block, saved.inputs_saved, strict=True)
        ),
        largest_saved_bytes=saved.largest,
        recurrent_backward_bytes=saved.recurrent_backward,
        output_fp32_bytes=saved.output_fp32,
        peak_live_bytes=peak_live,
        micro_batch_size=int(example_input.shape[0]) if example_input is not None else 0,
    )


class _SavedTensorCounter:
    """Sums saved-for-backward bytes, once per tensor, skipping parameters."""

    def __init__(self, model: nn.Module, blocks: list[nn.Module], param_ids: set[int]):
        self.model, self.blocks, self.param_ids = model, blocks, param_ids
        self.total = self.largest = self.recurrent_backward = self.output_fp32 = 0
        self.per_block = [0] * len(blocks)
        self.block_inputs = [0] * len(blocks)
        self.inputs_saved = [0] * len(blocks)  # a block's input, first saved inside it
        self._input_ids: dict[int, set[int]] = {}  # block index -> ids of its inputs
        self._seen: dict[int, torch.Tensor] = {}  # keeps tensors alive so ids stay unique
        self._running: list[int] = []  # stack of block indexes now in forward

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        base = tensor._base if tensor._base is not None else tensor
        if id(tensor) in self.param_ids or id(base) in self.param_ids or id(base) in self._seen:
            return tensor
        self._seen[id(base)] = base
        size = _nbytes(base)
        self.total += size
        self.largest = max(self.largest, size)
        if self._running:
            outer = self._running[0]
            self.per_block[outer] += size
            if id(base) in self._input_ids.get(outer, ()):
                self.inputs_saved[outer] += size
        return tensor

    def unpack(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def blocks_share_an_input(self) -> bool:
        """Several blocks read one tensor (parallel branches, as textcnn's convs): backward
        then holds its gradient summed over them beside each branch's own."""
        ids = [each for found in self._input_ids.values() for each in found]
        return len(ids) != len(set(ids))

    def release(self) -> list[torch.Tensor]:
        """The saved tensors, no longer held here."""
        saved = list(self._seen.values())
        self._seen.clear()
        return saved

    def hooks(self):
        from contextlib import ExitStack

        stack = ExitStack()
        for index, block in enumerate(self.blocks):
            stack.callback(block.register_forward_pre_hook(self._enter(index)).remove)
            stack.callback(block.register_forward_hook(self._leave).remove)
        for module in self.model.modules():
            if isinstance(module, nn.RNNBase):
                stack.callback(module.register_forward_pre_hook(self._recurrent).remove)
        return stack

    def _recurrent(self, module: nn.RNNBase, args: tuple) -> None:
        inputs = args[0]
        if isinstance(inputs, PackedSequence):  # (steps of all sequences, features)
            inputs = inputs.data
        num_tokens = inputs.numel() // inputs.shape[-1]  # time steps x sequences
        found = recurrent_backward_bytes(module, num_tokens, inputs.element_size())
        self.recurrent_backward = max(self.recurrent_backward, found)

    def _enter(self, index: int):
        def hook(module: nn.Module, args: tuple) -> None:
            if not self._running:
                tensors = [a for a in args if torch.is_tensor(a)]
                self.block_inputs[index] = sum(_nbytes(t) for t in tensors)
                self._input_ids[index] = {
                    id(t._base if t._base is not None else t) for t in tensors
                }
            self._running.append(index)

        return hook

    def _leave(self, module: nn.Module, args: tuple, output) -> None:
        self._running.pop()


class _FusedAttention(TorchFunctionMode):
    """On meta, `scaled_dot_product_attention` takes the math path, which saves the (B, h, T,
    T) probabilities; on CPU and GPU a fused kernel runs, which saves only its output and
    log-sum-exp. The meta pass runs the fused op's meta kernel instead, so counts those."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and _fusable(args, kwargs):
            query, key, value = args
            fused = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                query,
                key,
                value,
                kwargs.get("dropout_p", 0.0),
                kwargs.get("is_causal", False),
                scale=kwargs.get("scale"),
            )
            return fused[0]
        return func(*args, **kwargs)


def _fusable(args: tuple, kwargs: dict) -> bool:
    """Meta q, k, v with as many heads each and no explicit mask (what the fused kernels run)."""
    if len(args) != 3 or set(kwargs) - {"dropout_p", "is_causal", "scale"}:
        return False
    query, key, value = args
    return all(t.is_meta for t in args) and query.shape[1] == key.shape[1] == value.shape[1]


def _meta_state(model: nn.Module, compute_dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    state = {}
    for name, tensor in chain(model.named_parameters(), model.named_buffers()):
        dtype = compute_dtype if compute_dtype and tensor.is_floating_point() else tensor.dtype
        meta = torch.empty_like(tensor, device="meta", dtype=dtype)
        state[name] = meta.requires_grad_(tensor.requires_grad)
    return state


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


class PeakTracker:
    """Peak memory since `start()`: CUDA's allocator peak, or the process's peak RSS.

    On CPU the kernel's high-water mark is reset through /proc/self/clear_refs where that
    is allowed (earlier peaks, such as data loading, then do not count); otherwise
    ru_maxrss is used. Library code paged in meanwhile (file-backed RSS) is not memory the
    run allocated and is subtracted.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.baseline_bytes = 0
        self.file_bytes = 0
        self.method = "cuda max_memory_allocated" if device.type == "cuda" else "peak RSS"

    def start(self, *, already_counted_bytes: int = 0) -> None:
        """Remember the baseline; `already_counted_bytes` are resident but in the estimate."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_bytes = torch.cuda.memory_allocated(self.device) - already_counted_bytes
            return
        self.method = "peak RSS" if _reset_rss_peak() else "ru_maxrss"
        status = _proc_status()
        self.file_bytes = status.get("RssFile", 0)
        self.baseline_bytes = status.get("VmRSS", _peak_rss_bytes()) - already_counted_bytes

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return (torch.cuda.max_memory_allocated(self.device) - self.baseline_bytes) / _MB
        status = _proc_status()
        paged_in = max(0, status.get("RssFile", 0) - self.file_bytes)
        return (_peak_rss_bytes() - paged_in - self.baseline_bytes) / _MB


def _reset_rss_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    status = _proc_status()
    if "VmHWM" in status:
        return status["VmHWM"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _proc_status() -> dict[str, int]:
    """VmRSS, VmHWM and RssFile in bytes (empty where /proc does not exist)."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    values = {}
    for line in lines:
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssFile"):
            values[key] = int(rest.split()[0]) * 1024
    return values
