"""The activation bytes alive at the worst moment of a backward, on the meta device.

The saved-tensor count (`memory_probe`) says what a forward keeps; what backward holds on
top depends on the graph: a tensor read by several layers (textcnn's embedding feeds every
conv) keeps its gradient summed across them while each layer's own gradients and kernel
buffers come and go. So where blocks share an input the meta pass also runs backward, and
`LiveBytes` follows every storage from the saved tensors on until it is freed, plus what a
kernel allocates inside itself that no tensor shows (`_workspace_bytes`). Parameters,
their gradients (the planner counts those apart) and the model's output and its gradient
(the loss terms) are left out.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from torch import nn
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
    """Records when each storage made by an op lives; `peak_bytes` replays the record.

    A storage's death is reported by a finalizer (torch keeps one Python object per live
    storage), so no op has to look at every live storage."""

    def __init__(self, ignore: list[torch.Tensor], alive: list[torch.Tensor] = ()):
        """`ignore`: parameters and inputs; `alive`: tensors already alive (the saved ones
        of a forward run outside this mode), counted from the start."""
        super().__init__()
        self._ignored = {_key(tensor) for tensor in ignore}
        self._live: dict[int, int] = {}  # storage key -> serial, while it lives
        self._freed: list[int] = []  # serials freed since the last op
        self._steps: list[_Step] = [_Step()]
        self._excluded: set[int] = set()
        self._serial = 0
        for tensor in alive:
            self._track(tensor, self._steps[0])

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        step = _Step(died=self._freed, workspace=_workspace_bytes(func, args))
        self._freed = []
        for tensor in tree_flatten(out)[0]:
            if torch.is_tensor(tensor):
                self._track(tensor, step)
        self._steps.append(step)
        return out

    def _track(self, tensor: torch.Tensor, step: _Step) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._ignored or key in self._live:
            return
        self._serial += 1
        self._live[key] = self._serial
        weakref.finalize(storage, self._free, key, self._serial)
        step.born.append((self._serial, storage.nbytes()))

    def _free(self, key: int, serial: int) -> None:
        self._live.pop(key, None)
        self._freed.append(serial)

    def exclude(self, tensor: torch.Tensor) -> None:
        """Leave this tensor's storage out of the count (the planner counts it elsewhere)."""
        serial = self._live.get(_key(tensor))
        if serial is not None:
            self._excluded.add(serial)

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
    return tensor.untyped_storage()._cdata


def _workspace_bytes(func, args) -> int:
    """Buffers a CPU kernel holds inside one call: oneDNN's convolution backward (torch
    2.13) copies its input and output gradient, and a non-contiguous input once more
    (measured by peak RSS around the call, conv1d/conv2d: within 0.1 MB of this, but
    +2 MB for a 3-channel input layer)."""
    if func is _aten.convolution_backward.default:
        grad_output, inputs = args[0], args[1]
        return _nbytes(inputs) + _nbytes(grad_output) + _copied(inputs)
    return 0


def _copied(tensor: torch.Tensor) -> int:
    return 0 if tensor.is_contiguous() else _nbytes(tensor)


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()
