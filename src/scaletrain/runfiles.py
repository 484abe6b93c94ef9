"""The types of a run directory's JSON files, checked where they are read.

Any file of a run directory may have been edited: a string where a count goes, or a NaN
where seconds go, is one line naming the file (and the record) and the key here, not a
traceback where the model is built or deep inside a plot. Beside data_spec.json (every key
known), keys no reader needs are let through (`extra="allow"`), so files of older and newer
versions still load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from scaletrain.errors import UserError

MAX_SIZE = 2**31 - 1  # a count or a dimension past this is no file scaletrain wrote
_Size = Annotated[int, Field(ge=1, le=MAX_SIZE)]


class _SpecFile(BaseModel):
    """The types `data_spec.json` must hold: a string where a size goes (or a huge or
    non-finite number) is refused here, not as a traceback deep in the model's build."""

    model_config = ConfigDict(extra="forbid", strict=True)
    task: Literal["classification", "regression", "language_model"]  # data.raw.Task
    input_shape: list[_Size] = Field(min_length=1, max_length=8)
    input_dtype: str
    num_outputs: _Size
    class_names: list[str] | None
    class_counts: list[Annotated[int, Field(ge=0, le=MAX_SIZE)]] | None
    vocab_size: _Size | None = None
    is_image: bool = False
    input_kind: Literal["array", "table", "text", "image"] = "array"
    raw_columns: list[str] | None = None


def check_data_spec(data: Any) -> dict[str, Any]:
    """`data_spec.json`'s fields with their types checked (ValueError naming the key): a
    string where a size goes, or a huge or non-finite number, is refused here, not as a
    traceback where the model is built or the report drawn."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    try:
        return _SpecFile.model_validate(data).model_dump()
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        got = repr(error["input"])[:40]
        raise ValueError(f"{key}: {error['msg'].lower()}, got {got}") from None


Count = Annotated[int, Field(ge=0, le=2**53)]  # past 2**53 a float (an axis) cannot hold it
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _fits_a_float(value: Any) -> Any:
    if type(value) is int and abs(value) > 2**1023:  # JSON allows it; float() overflows
        raise ValueError("a number too large for a float")
    return value


# a loss or a metric may be NaN (a diverged run logs it)
Number = Annotated[float, BeforeValidator(_fits_a_float)] | None


class _File(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class _Metrics(_File):
    """One split's metrics: numbers (NaN allowed), and the lists the report draws; other
    lists and objects (metrics of later versions) pass as they are."""

    __pydantic_extra__: dict[str, Number | list[Any] | dict[str, Any]]
    confusion_matrix: list[list[Number]] | None = None
    per_class: dict[str, list[Number]] | None = None


class _Record(_File):
    """One line of metrics.jsonl: a training window, an evaluation or an event."""

    split: str | None = None
    event: str | None = None
    step: Count | None = None
    epoch: Count | None = None
    time_s: Seconds | None = None
    loss: Number = None
    lr: Number = None
    grad_norm: Number = None
    metrics: _Metrics | None = None


Span = Annotated[list[Count], Field(min_length=2, max_length=2)]


class _LedgerLine(_File):
    """One line of ledger.jsonl: the samples a step (or a run of steps) trained on."""

    step: Count | None = None
    steps: Span | None = None
    epoch: Count | None = None
    positions: Span | None = None
    batch: Count | None = None


class _Best(_File):
    name: str | None = None
    value: Number = None


class _Weights(_File):
    name: str | None = None
    step: Count | None = None


class _Summary(_File):
    status: str | None = None
    weights: _Weights | None = None
    metrics_last: dict[str, _Metrics] | None = None
    name: str | None = None
    task: str | None = None
    wall_s: Seconds | None = None
    world_size: Count | None = None
    steps: Count | None = None
    epochs: Count | None = None
    best_step: Count | None = None
    best_metric: _Best | None = None
    metrics: dict[str, _Metrics] | None = None
    class_names: list[str] | None = None
    versions: dict[str, Any] | None = None
    counters: dict[str, Count] | None = None
    train_samples_per_s: Number = None
    train_tokens_per_s: Number = None
    peak_rss_mb: Number = None
    mfu: Number = None
    overhead_fraction: Number = None
    compile_s: Seconds | None = None
    device: str | None = None
    precision: str | None = None


class _Plan(_File):
    world_size: Count | None = None
    steps_per_epoch: Count | None = None
    total_steps: Count | None = None
    device: str | None = None
    precision: str | None = None


class _Layer(_File):
    name: str | None = None
    type: str | None = None
    depth: Annotated[int, Field(ge=0, le=1000)] | None = None
    output_shapes: list[list[Any]] | None = None
    num_params: Count | None = None
    num_trainable: Count | None = None


class _ModelSummary(_File):
    model_type: str | None = None
    input_shape: list[Count] | None = None
    input_dtype: str | None = None
    shapes_from: str | None = None
    num_params: Count | None = None
    num_trainable: Count | None = None
    num_frozen: Count | None = None
    flops_per_sample: Count | None = None
    size_mb: Number = None
    parameter_bytes: dict[str, Count] | None = None
    buffer_bytes: dict[str, Count] | None = None
    layers: list[_Layer] | None = None


class _SpecShown(_File):
    """What a report shows of data_spec.json (check_data_spec holds every key to load it)."""

    task: str | None = None
    num_outputs: Count | None = None
    class_names: list[str] | None = None
    class_counts: list[Count] | None = None


_SCHEMAS = {
    "data_spec.json": _SpecShown,
    "summary.json": _Summary,
    "plan.json": _Plan,
    "model_summary.json": _ModelSummary,
}


def checked_file(path: Path, data: Any) -> dict[str, Any]:
    """`data` read from `path` (summary.json, plan.json, model_summary.json, data_spec.json)
    as a reader may use it; UserError naming the file and the key otherwise."""
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(data).__name__}")
    _validate(_SCHEMAS[path.name], data, where=str(path))
    return data


def checked_records(path: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of metrics.jsonl or ledger.jsonl; one that holds a wrong type is named
    by its number."""
    schema = _LedgerLine if path.name == "ledger.jsonl" else _Record
    for number, record in enumerate(records, start=1):
        _validate(schema, record, where=f"{path}: record {number}")
    return records


_TYPE_NAMES = {"float", "int", "str", "bool", "list", "dict", "none"}


def _validate(schema: type[BaseModel], data: dict, *, where: str) -> None:
    try:
        schema.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        # a union's member names (`float`, `list[...]`) are no keys of the file
        parts = [str(part) for part in error["loc"]]
        key = ".".join(part for part in parts if "[" not in part and part not in _TYPE_NAMES)
        got = repr(error["input"])[:60]
        raise UserError(
            f"{where}: `{key}`: {error['msg'][:1].lower()}{error['msg'][1:]}, got {got}; "
            "was the file edited?"
        ) from None
