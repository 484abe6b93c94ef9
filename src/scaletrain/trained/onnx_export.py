"""Any `nn.Module` to ONNX, checked against PyTorch with onnxruntime before it is written.

torch 2.13 has two exporters: the dynamo one (`torch.export` + onnxscript) exports mlp, cnn,
resnet, textcnn, gpt and language-model rnn; packed sequences (a classifying rnn) trace only
with the legacy TorchScript one. So the dynamo exporter is tried first, then the legacy one,
and a module neither can export is refused with both reasons. The graph is verified in
memory (onnx.checker, an onnxruntime session, max abs difference) and written only if it
passes, with a SHA-256 of its graph inside, so a file edited later is refused on load.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from scaletrain.errors import CheckpointError, UserError
from scaletrain.fileio import atomic_path
from scaletrain.trained.onnx_int8 import (
    dynamo_translations,
    register_legacy_symbolic,
    rounding_allowance,
    with_int8_linears,
)

INPUT_NAME = "inputs"
OUTPUT_NAME = "outputs"
DIGEST_PROP = "scaletrain.graph_sha256"
DEFAULT_OPSET = 18  # the dynamo exporter's own; 17 (the minimum asked for) works too
TOLERANCE = 1e-4  # max abs difference to PyTorch in fp32
LATENCY_BATCHES = (1, 64)
PARITY_BATCH = 64


class ParityError(UserError):
    """onnxruntime's outputs differ from PyTorch's by more than the tolerance."""


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    *,
    inputs: torch.Tensor | None = None,
    opset: int = DEFAULT_OPSET,
    tolerance: float = TOLERANCE,
) -> dict:
    """Export `model` (eval mode, fp32, CPU) with a dynamic batch dimension, check it against
    PyTorch on `inputs` (default: `example`) with onnxruntime, and write it to `path`.

    Returns the figures: exporter, opset, max_abs_diff, samples, latency_ms (median per
    batch of 1 and 64, torch and onnxruntime) and file_bytes. Raises ParityError (nothing
    written) where the difference exceeds `tolerance` (per sample, plus twice the int8
    rounding's own effect where torchao's int8-dynamic layers quantize activations: see
    onnx_int8.rounding_allowance), UserError where no exporter can.
    """
    if opset < 17:
        raise UserError(f"--opset: expected 17 or higher, got {opset}")
    model = with_int8_linears(model.cpu().float().eval())
    # two samples: torch.export would fix a batch of 1 as a constant
    example = example[:2] if len(example) > 1 else torch.cat([example, example])
    proto, exporter = _to_proto(model, example, opset)
    _add_digest(proto)
    data = proto.SerializeToString()
    session = session_from_bytes(data, where=str(path))
    inputs = example if inputs is None else inputs
    differences = sample_differences(model, session, inputs)
    allowance = rounding_allowance(model, inputs, batch=PARITY_BATCH)
    figures = {
        "exporter": exporter,
        "opset": opset,
        "max_abs_diff": float(differences.max()),
        "tolerance": tolerance,
        "samples": len(inputs),
        "latency_ms": latency_table(model, session, inputs),
        "file_bytes": len(data),
    }
    if allowance.any():
        figures["int8_rounding_allowance_max"] = float(allowance.max())
        figures["samples_over_tolerance"] = int((differences > tolerance).sum())
    if not (differences <= tolerance + allowance).all():  # NaN fails too
        allowed = " + 2 x the int8 activation rounding's effect" if allowance.any() else ""
        raise ParityError(
            f"{path}: onnxruntime differs from PyTorch by {differences.max():.3g} (max abs, "
            f"tolerance {tolerance:g}{allowed} per sample) on {len(inputs)} samples; "
            "nothing written"
        )
    with atomic_path(Path(path)) as temporary:
        Path(temporary).write_bytes(data)
    return figures


def load_onnx(path: str | Path):
    """An onnxruntime session of an exported file, after its checksum, onnx.checker and
    onnxruntime accept it; anything else is one CheckpointError line naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return session_from_bytes(data, where=str(path), verify=True)


def session_from_bytes(data: bytes, *, where: str, verify: bool = False):
    """Parse, check (and with `verify`, match the graph's digest), then open in onnxruntime."""
    onnx, ort = _onnx_modules()
    try:
        proto = onnx.load_model_from_string(data)
        if verify:
            _check_digest(proto, where)
        onnx.checker.check_model(proto)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: the warnings are about the CPU
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except CheckpointError:
        raise
    except Exception as exc:  # protobuf DecodeError, ValidationError, onnxruntime's Fail
        reason = str(exc).strip().splitlines()[0][:160] if str(exc) else ""
        raise CheckpointError(
            f"{where}: not a valid ONNX model ({type(exc).__name__}: {reason})"
        ) from None


def sample_differences(model: nn.Module, session, inputs: torch.Tensor) -> np.ndarray:
    """Largest |onnxruntime - PyTorch| of each sample of `inputs`, in batches (fp32 outputs)."""
    worst = []
    with torch.no_grad():
        for batch in inputs.split(PARITY_BATCH):
            expected = model(batch).float().numpy()
            got = session.run(None, {INPUT_NAME: batch.numpy()})[0]
            difference = np.abs(got.astype(np.float64) - expected).reshape(len(batch), -1)
            worst.append(difference.max(axis=1))
    return np.concatenate(worst)


def latency_table(model: nn.Module, session, inputs: torch.Tensor) -> dict:
    """Median milliseconds per forward, by engine and batch size (inputs repeated to fill)."""
    table: dict = {"torch": {}, "onnxruntime": {}}
    for size in LATENCY_BATCHES:
        batch = inputs[torch.arange(size) % len(inputs)]
        array = batch.numpy()
        with torch.no_grad():
            table["torch"][str(size)] = _median_ms(lambda batch=batch: model(batch))
        table["onnxruntime"][str(size)] = _median_ms(
            lambda array=array: session.run(None, {INPUT_NAME: array})
        )
    return table


def _median_ms(forward, *, repeats: int = 15) -> float:
    forward()  # warm-up: first-call allocations and kernel choice
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 4)


def _to_proto(model: nn.Module, example: torch.Tensor, opset: int):
    """(ModelProto, exporter name): dynamo first, then the legacy exporter."""
    try:
        return _dynamo_proto(model, example, opset), "dynamo"
    except Exception as dynamo_error:  # torch.export's many error types
        try:
            return _legacy_proto(model, example, opset), "torchscript"
        except Exception as legacy_error:
            raise UserError(
                f"onnx: torch {torch.__version__} cannot export this {type(model).__name__}: "
                f"dynamo exporter: {_first_line(dynamo_error)}; legacy exporter: "
                f"{_first_line(legacy_error)}"
            ) from None


def _dynamo_proto(model: nn.Module, example: torch.Tensor, opset: int):
    batch = torch.export.Dim("batch", min=1)
    with _quiet():
        program = torch.onnx.export(
            model,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            dynamo=True,
            verbose=False,
            custom_translation_table=dynamo_translations(),
        )
    return program.model_proto


def _legacy_proto(model: nn.Module, example: torch.Tensor, opset: int):
    onnx, _ = _onnx_modules()
    buffer = io.BytesIO()
    register_legacy_symbolic(opset)
    with _quiet(), _native_output_silenced():
        torch.onnx.export(
            model,
            (example,),
            buffer,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return onnx.load_model_from_string(buffer.getvalue())


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and deprecation notes; the CLI prints its own table."""
    logger = logging.getLogger("torch.onnx")  # e.g. "torchvision is not installed"
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _native_output_silenced():
    """The legacy exporter's C++ side writes warnings and graph dumps to fds 1 and 2 (packed
    sequences' shape inference), which Python cannot redirect: /dev/null meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    try:
        with open(os.devnull, "w") as null:
            for fd in saved:
                os.dup2(null.fileno(), fd)
        yield
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)


def _graph_digest(proto) -> str:
    return hashlib.sha256(proto.graph.SerializeToString(deterministic=True)).hexdigest()


def _add_digest(proto) -> None:
    entry = proto.metadata_props.add()
    entry.key, entry.value = DIGEST_PROP, _graph_digest(proto)


def _check_digest(proto, where: str) -> None:
    saved = {entry.key: entry.value for entry in proto.metadata_props}.get(DIGEST_PROP)
    if saved is None:
        raise CheckpointError(f"{where}: not an ONNX file scaletrain exported (no checksum)")
    if saved != _graph_digest(proto):
        raise CheckpointError(f"{where}: its graph does not match its checksum; was it edited?")


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    summary = [line for line in lines if "Exception summary" not in line and "<class" in line]
    return (summary or lines or [type(error).__name__])[0][:200]


def _onnx_modules():
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise UserError(
            "onnx: ONNX export needs onnx and onnxruntime: pip install 'scaletrain[export]'"
        ) from None
    return onnx, onnxruntime
