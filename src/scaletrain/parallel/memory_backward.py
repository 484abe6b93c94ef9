"""The activation bytes alive at the worst moment of a forward and backward, on meta.

The saved-tensor count (`memory_probe`) says what a forward keeps; what backward holds on
top depends on the graph: a tensor read by several layers (textcnn's embedding feeds every
conv) keeps its gradient summed across them while each layer's own gradients and kernel
buffers come and go. So the meta pass also runs backward, and `LiveBytes` follows every
storage the ops create until it is freed, plus what a kernel allocates inside itself that
no tensor shows (`_workspace_bytes`). Parameters, their gradients (the planner counts
those apart) and the model's output and its gradient (the loss terms) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

_aten = torch.ops.aten


@dataclass
class _Step:
    """One op: storages it created (serial, bytes), serials freed since, its own buffers."""

    born: list[tuple[int, int]] = field(default_factory=list)
    died: list[int] = field(default_factory=list)
    workspace: int = 0


class LiveBytes(TorchDispatchMode):
    """Records when each storage made by an op lives; `peak_bytes` replays the record."""

    def __init__(self, ignore: list[torch.Tensor]):
        super().__init__()
        self._ignored = {_key(tensor) for tensor in ignore}
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}  # key -> (ref, serial)
        self._steps: list[_Step] = []
        self._excluded: set[int] = set()
        self._serial = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        step = _Step(workspace=_workspace_bytes(func, args, out))
        for key, (ref, serial) in list(self._live.items()):
            if ref.expired():  # freed before or by this op; its address may be reused now
                del self._live[key]
                step.died.append(serial)
        for tensor in tree_flatten(out)[0]:
            if torch.is_tensor(tensor) and _key(tensor) not in self._ignored:
                storage = tensor.untyped_storage()
                key = _key(tensor)
                if key not in self._live:
                    self._serial += 1
                    self._live[key] = (StorageWeakRef(storage), self._serial)
                    step.born.append((self._serial, storage.nbytes()))
        self._steps.append(step)
        return out

    def exclude(self, tensor: torch.Tensor) -> None:
        """Leave this tensor's storage out of the count (the planner counts it elsewhere)."""
        found = self._live.get(_key(tensor))
        if found is not None:
            self._excluded.add(found[1])

    def peak_bytes(self) -> int:
        live = peak = 0
        sizes: dict[int, int] = {}
        for step in self._steps:
            live -= sum(sizes.pop(serial, 0) for serial in step.died)
            for serial, size in step.born:
                if serial not in self._excluded:
                    sizes[serial] = size
                    live += size
            peak = max(peak, live + step.workspace)
        return peak


def backward_peak_bytes(output, params: list[torch.Tensor], live: LiveBytes) -> int:
    """Runs backward from `output` (meta) under `live`; 0 where the meta device cannot."""
    first = output[0] if isinstance(output, tuple | list) else output
    if not torch.is_tensor(first) or not first.requires_grad:
        return live.peak_bytes()
    hooks = [
        param.register_post_accumulate_grad_hook(lambda p: live.exclude(p.grad))
        for param in params
        if param.requires_grad
    ]
    try:
        with live:
            gradient = torch.empty_like(first)  # the loss's gradient: a loss term, not here
            live.exclude(first)
            live.exclude(gradient)
            torch.autograd.backward(first, gradient)
    except (RuntimeError, NotImplementedError):  # an op without a meta backward
        return 0
    finally:
        for hook in hooks:
            hook.remove()
    return live.peak_bytes()


# gate blocks per step: LSTM i, f, g, o; GRU r, z, n; a plain RNN one
_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def recurrent_backward_bytes(module: nn.RNNBase, num_tokens: int, element_size: int) -> int:
    """The gradient buffers one layer's backward holds at once, for the largest layer.

    Per direction (run one after the other) the gradient of all steps' gates, about 1.5x
    the gates (the stacked gradient and the buffer it accumulates into overlap), plus the
    gradients of the layer's output and input. Calibrated on CPU (torch 2.13, LSTM through
    oneDNN, GRU/RNN decomposed): the profiler's peak is 0.7-1.0x this for 1-2 layers,
    uni- and bidirectional (docs/distributed.md, the memory planner).
    """
    directions = 2 if module.bidirectional else 1
    hidden = module.hidden_size
    gates = _GATES.get(module.mode, 4) * hidden
    widest = 0
    for layer in range(module.num_layers):
        layer_input = module.input_size if layer == 0 else directions * hidden
        widest = max(widest, 1.5 * gates + directions * hidden + layer_input)
    return int(num_tokens * widest * element_size)


def _key(tensor: torch.Tensor) -> int:
    return StorageWeakRef(tensor.untyped_storage()).cdata


def _workspace_bytes(func, args, out) -> int:
    """Buffers a CPU kernel holds inside one call (oneDNN convolution, torch 2.13): forward
    a copy of the output, backward copies of its input and output gradient, and a
    non-contiguous input is copied once more (measured on CPU by peak RSS around the call,
    conv1d/conv2d, within 0.1 MB of this but for a 3-channel input layer, +2 MB there)."""
    if func is _aten.convolution.default:
        return _nbytes(out) + _copied(args[0])
    if func is _aten.convolution_backward.default:
        grad_output, inputs = args[0], args[1]
        return _nbytes(inputs) + _nbytes(grad_output) + _copied(inputs)
    return 0


def _copied(tensor: torch.Tensor) -> int:
    return 0 if tensor.is_contiguous() else _nbytes(tensor)


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()
