"""A Keras-style model summary: layers, output shapes, parameters, size and FLOPs per sample.

Output shapes come from forward hooks during the one-sample forward that counts FLOPs
(``count_flops_per_sample``): on the meta device first (no memory, no compute), else on one
real zero sample on the model's device (for a module that calls ``.item()`` or branches on
values), else they are "?" and FLOPs "n/a": a summary never stops a run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from rich.console import Group, RenderableType
from rich.table import Table
from torch import nn

from scaletrain.models.flops import TRAIN_FLOPS_FACTOR, count_flops_per_sample

BYTES_PER_MB = 2**20  # as the memory planner counts
Shapes = tuple[tuple[int, ...], ...]
_MAX_NOTE_CHARS = 200


@dataclass(frozen=True)
class LayerSummary:
    """One submodule; its parameter counts include its children's."""

    name: str  # qualified, as in named_modules(): features.0.conv
    type: str  # class name
    depth: int  # 1 for the model's direct children
    # every tensor it returned for a batch of one; None: not called, or the forward failed
    output_shapes: Shapes | None
    num_params: int
    num_trainable: int


@dataclass(frozen=True)
class ModelSummary:
    """What ``summarize_model`` found; ``to_dict()`` is what ``model_summary.json`` holds."""

    model_type: str
    input_shape: tuple[int, ...]  # one sample, without the batch dimension
    input_dtype: str
    layers: tuple[LayerSummary, ...]
    num_params: int  # a parameter shared by two layers counts once
    num_trainable: int
    parameter_bytes: dict[str, int]  # dtype name -> bytes
    buffer_bytes: dict[str, int]
    flops_per_sample: int | None  # forward, as count_flops_per_sample; None: not countable
    shapes_from: Literal["meta", "sample", "unknown"]
    note: str | None = None  # why the meta pass (or both passes) failed
    flops_formula: str | None = None  # a model's analytic count (GPT: 6N + 12·L·H·Q·T), if any

    @property
    def num_frozen(self) -> int:
        return self.num_params - self.num_trainable

    @property
    def size_mb(self) -> float:
        """Parameters plus buffers, in MiB."""
        num_bytes = sum(self.parameter_bytes.values()) + sum(self.buffer_bytes.values())
        return num_bytes / BYTES_PER_MB

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples as lists, as the file holds them), with the derived totals."""
        data = json.loads(json.dumps(asdict(self)))
        return {**data, "num_frozen": self.num_frozen, "size_mb": self.size_mb}


def summarize_model(
    model: nn.Module, input_shape: tuple[int, ...], *, input_dtype: torch.dtype = torch.float32
) -> ModelSummary:
    """Layers, output shapes, parameter counts, size and forward FLOPs of one sample.

    Args:
        model: any unwrapped ``nn.Module`` (before DDP/FSDP/compile); left as it was.
        input_shape: shape of one sample, without the batch dimension.
        input_dtype: ``torch.int64`` for token ids, else the float dtype of the inputs.
    """
    modules = [(name, module) for name, module in model.named_modules() if name]
    shapes, flops, shapes_from, note = _trace(model, modules, tuple(input_shape), input_dtype)
    formula = None
    if callable(getattr(model, "train_flops_per_sample", None)):  # the count MFU uses too
        flops = model.train_flops_per_sample(tuple(input_shape)) // TRAIN_FLOPS_FACTOR
        formula = model.flops_formula(tuple(input_shape))
    layers = tuple(
        LayerSummary(
            name=name,
            type=type(module).__name__,
            depth=name.count(".") + 1,
            output_shapes=shapes.get(name),
            num_params=_count(module.parameters()),
            num_trainable=_count(p for p in module.parameters() if p.requires_grad),
        )
        for name, module in modules
    )
    return ModelSummary(
        model_type=type(model).__name__,
        input_shape=tuple(input_shape),
        input_dtype=str(input_dtype).removeprefix("torch."),
        layers=layers,
        num_params=_count(model.parameters()),
        num_trainable=_count(p for p in model.parameters() if p.requires_grad),
        parameter_bytes=_bytes_by_dtype(model.parameters()),
        buffer_bytes=_bytes_by_dtype(model.buffers()),
        flops_per_sample=flops,
        shapes_from=shapes_from,
        note=note,
        flops_formula=formula,
    )


def summary_table(summary: ModelSummary, *, max_rows: int | None = None) -> RenderableType:
    """The summary for a terminal: one row per layer (indented by depth), then the totals.

    Args:
        summary: what ``summarize_model`` returned.
        max_rows: leave out the deepest levels until the layers fit (the top level always shows).
    """
    frozen = summary.num_frozen > 0
    known = summary.shapes_from != "unknown"
    shown = _shown_layers(summary.layers, max_rows)
    hidden = len(summary.layers) - len(shown)
    layers = Table(
        title=f"{summary.model_type}: one sample {summary.input_shape} {summary.input_dtype}",
        title_justify="left",
        caption=f"{hidden} deeper layers not shown (all are in model_summary.json)"
        if hidden
        else None,
    )
    for column in ("layer", "type", "output shape"):
        layers.add_column(column)
    layers.add_column("parameters", justify="right")
    if frozen:
        layers.add_column("trainable", justify="right")
    for layer in shown:
        row = ["  " * (layer.depth - 1) + layer.name.rpartition(".")[2], layer.type]
        row += [format_shapes(layer.output_shapes, known=known), f"{layer.num_params:,}"]
        layers.add_row(*row, *([f"{layer.num_trainable:,}"] if frozen else []))
    totals = Table.grid(padding=(0, 2))
    totals.add_column(style="bold")
    totals.add_column()
    for label, value in summary_facts(summary):
        totals.add_row(label, value)
    return Group(layers, totals)


def _shown_layers(layers: tuple[LayerSummary, ...], max_rows: int | None) -> list[LayerSummary]:
    """Layers down to the deepest level whose rows fit in ``max_rows`` (the top level always)."""
    if max_rows is None:
        return list(layers)
    depth = max((layer.depth for layer in layers), default=1)
    while depth > 1 and sum(layer.depth <= depth for layer in layers) > max_rows:
        depth -= 1
    return [layer for layer in layers if layer.depth <= depth]


def summary_facts(summary: ModelSummary) -> list[tuple[str, str]]:
    """The totals as (label, text) lines, below the layer table."""
    flops = summary.flops_per_sample
    sources = {
        "meta": "one sample on the meta device (batch dimension 1)",
        "sample": "one real zero sample (batch dimension 1)",
        "unknown": "unknown (?): the forward failed",
    }
    facts = [
        ("total parameters", f"{summary.num_params:,}"),
        ("trainable", f"{summary.num_trainable:,}"),
        ("non-trainable", f"{summary.num_frozen:,}"),
        ("size", f"{summary.size_mb:,.3f} MB (parameters + buffers)"),
        ("parameters", _by_dtype(summary.parameter_bytes)),
        ("buffers", _by_dtype(summary.buffer_bytes)),
        ("FLOPs per sample", f"{flops:,} (forward)" if flops is not None else "n/a"),
        ("output shapes", sources[summary.shapes_from]),
    ]
    if summary.flops_formula:
        facts.append(("FLOPs formula", f"{summary.flops_formula} (training = 3x forward)"))
    return facts + ([("note", summary.note)] if summary.note else [])


def format_shapes(shapes: Shapes | None, *, known: bool = True) -> str:
    """``(1, 32, 8, 8)``; ``—``: not called (a ModuleList); ``?``: the forward failed."""
    if shapes is None:
        return "—" if known else "?"
    if not shapes:
        return "no tensor"
    return ", ".join(str(tuple(shape)) for shape in shapes)


def _trace(
    model: nn.Module,
    modules: list[tuple[str, nn.Module]],
    input_shape: tuple[int, ...],
    input_dtype: torch.dtype,
) -> tuple[dict[str, Shapes], int | None, str, str | None]:
    """Output shapes per layer and FLOPs: on meta, else on one real sample, else unknown."""
    shapes: dict[str, Shapes] = {}

    def hook_for(name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:  # None: output unchanged
            shapes.setdefault(name, _shapes(output))  # a layer called twice keeps its first

        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in modules]
    errors = []
    try:
        for shapes_from, device in (("meta", "meta"), ("sample", None)):
            shapes.clear()
            try:
                # a real forward may draw random numbers: the caller's CPU stream stays as it was
                with torch.random.fork_rng(devices=[]):
                    flops = count_flops_per_sample(
                        model, input_shape, input_dtype=input_dtype, device=device
                    )
                return shapes, flops, shapes_from, _note(errors)
            except Exception as error:  # a user module's own failure: summarize without it
                first_line = (str(error).strip().splitlines() or [""])[0][:_MAX_NOTE_CHARS]
                errors.append(
                    f"{shapes_from} forward failed ({type(error).__name__}: {first_line})"
                )
    finally:
        for handle in handles:
            handle.remove()
    return {}, None, "unknown", _note(errors)


def _shapes(output: Any) -> Shapes:
    """Shapes of every tensor in a module's output (tuples, lists and dicts are opened)."""
    if isinstance(output, torch.Tensor):
        return (tuple(output.shape),)
    if isinstance(output, (tuple, list)):
        return tuple(shape for item in output for shape in _shapes(item))
    if isinstance(output, dict):
        return _shapes(list(output.values()))
    return ()


def _note(errors: list[str]) -> str | None:
    return "; ".join(errors) or None


def _count(parameters: Iterable[torch.Tensor]) -> int:
    return sum(parameter.numel() for parameter in parameters)


def _bytes_by_dtype(tensors: Iterable[torch.Tensor]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for tensor in tensors:
        dtype = str(tensor.dtype).removeprefix("torch.")
        sizes[dtype] = sizes.get(dtype, 0) + tensor.numel() * tensor.element_size()
    return sizes


def _by_dtype(sizes: dict[str, int]) -> str:
    return ", ".join(f"{dtype} {_megabytes(size)}" for dtype, size in sizes.items()) or "none"


def _megabytes(num_bytes: int) -> str:
    if num_bytes < BYTES_PER_MB // 1000:  # would print as 0.000 MB
        return f"{num_bytes:,} bytes"
    return f"{num_bytes / BYTES_PER_MB:,.3f} MB"
