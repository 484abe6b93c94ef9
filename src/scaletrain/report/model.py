"""The report's Model section, from ``model_summary.json`` (rank 0 writes it as a run starts).

The file is ``ModelSummary.to_dict()`` of ``scaletrain.models.summary``; it is read as plain
JSON here (importing ``scaletrain.models`` would import torch), so the formatting of shapes
and sizes below mirrors that module's. Run directories from before the file existed get no
section.
"""

from __future__ import annotations

from typing import Any

from scaletrain.report.page import Markup, facts, note, section, table
from scaletrain.report.rundata import RunData

BYTES_PER_MB = 2**20  # as scaletrain.models.summary counts
INDENT = "\u00a0" * 3  # per depth level; non-breaking, so HTML keeps it


def model_section(run: RunData) -> Markup:
    """Layers with output shapes and parameters, then totals, size and FLOPs per sample."""
    summary = run.model_summary
    if not isinstance(summary, dict):
        return Markup("")
    layers = [layer for layer in summary.get("layers") or [] if isinstance(layer, dict)]
    known = summary.get("shapes_from") != "unknown"
    frozen = any(layer.get("num_trainable") != layer.get("num_params") for layer in layers)
    headers = ["layer", "type", "output shape", "parameters", *(["trainable"] if frozen else [])]
    rows = [_layer_row(layer, known=known, frozen=frozen) for layer in layers]
    sample = f"{tuple(summary.get('input_shape') or ())} {summary.get('input_dtype', '')}"
    source = _SOURCES.get(summary.get("shapes_from"), _SOURCES["unknown"])
    body = [
        facts(_totals(summary)),
        table(headers, rows, table_id="model-summary-table"),
        note(
            f"Output shapes for one sample {sample} (batch dimension 1), {source}; a layer's "
            "parameters include its children's. From model_summary.json."
        ),
    ]
    if summary.get("note"):
        body.append(note(str(summary["note"])))
    return section("model", f"Model: {summary.get('model_type', '?')}", body)


def format_shapes(shapes: Any, *, known: bool) -> str:
    """``(1, 32, 8, 8)``; ``—``: not called (a ModuleList); ``?``: the forward failed."""
    if shapes is None:
        return "—" if known else "?"
    if not shapes:
        return "no tensor"
    return ", ".join(str(tuple(shape)) for shape in shapes)


def _layer_row(layer: dict[str, Any], *, known: bool, frozen: bool) -> list[object]:
    """Its own name indented by depth (the dotted path is implied), type, shapes, counts."""
    depth = layer.get("depth") if isinstance(layer.get("depth"), int) else 1
    name = INDENT * (depth - 1) + str(layer.get("name", "")).rpartition(".")[2]
    row = [name, layer.get("type"), format_shapes(layer.get("output_shapes"), known=known)]
    return [*row, layer.get("num_params"), *([layer.get("num_trainable")] if frozen else [])]


_SOURCES = {
    "meta": "traced on the meta device",
    "sample": "traced on one real zero sample (the meta device failed)",
    "unknown": "unknown: the forward failed (?)",
}


def _totals(summary: dict[str, Any]) -> list[tuple[str, str]]:
    flops = summary.get("flops_per_sample")
    return [
        ("total parameters", _number(summary.get("num_params"))),
        ("trainable", _number(summary.get("num_trainable"))),
        ("non-trainable", _number(summary.get("num_frozen"))),
        ("size (parameters + buffers)", _number(summary.get("size_mb"), "{:,.3f} MB")),
        ("parameters by dtype", _by_dtype(summary.get("parameter_bytes"))),
        ("buffers by dtype", _by_dtype(summary.get("buffer_bytes"))),
        ("FLOPs per sample (forward)", _number(flops) if flops is not None else "n/a"),
    ]


def _number(value: Any, form: str = "{:,}") -> str:
    """Digits grouped (53,098); ``?`` for anything but a number."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return form.format(value) if is_number else "?"


def _by_dtype(sizes: Any) -> str:
    if not isinstance(sizes, dict):
        return "?"
    return ", ".join(f"{dtype} {_megabytes(size)}" for dtype, size in sizes.items()) or "none"


def _megabytes(num_bytes: Any) -> str:
    if not isinstance(num_bytes, int):
        return "?"
    if num_bytes < BYTES_PER_MB // 1000:  # would show as 0.000 MB
        return f"{num_bytes:,} bytes"
    return f"{num_bytes / BYTES_PER_MB:,.3f} MB"
