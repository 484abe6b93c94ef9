"""A quantized run's model: torchao's recipe for each mode, and the exact reload of the
integer weights and scales that `scaletrain compress` keeps as plain safetensors tensors
(`compressed.safetensors`). Here, below the api, so `load_run`, `eval`, `predict` and
`export` give a quantized run's quantized model, as `compress.load_compressed` does."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from scaletrain.config import Config
from scaletrain.errors import UserError
from scaletrain.rundir import read_json
from scaletrain.trained.handle import Run

MODES = ("int8-dynamic", "int8-weight", "int4-weight", "qat")
INT4_GROUP = 32  # int4 weights share a scale per 32 inputs where the width allows, else per row
INT4_OFFSET = 8  # int4 values -8..7 stored as 0..15, two per byte
COMPRESS_FILE = "compress.json"  # what was done, the table, the quantized weights' names
WEIGHTS_FILE = "compressed.safetensors"  # the compressed weights (int data + scales)


def torchao():
    """The torchao package, or one line saying how to get it."""
    logger = logging.getLogger("torchao")
    level = logger.level
    logger.setLevel(logging.ERROR)  # its optional GPU kernel libraries fail to load on a CPU
    try:
        import torchao.quantization as quantization
    except ImportError:
        raise UserError("--quantize: needs torchao (pip install 'scaletrain[compress]')") from None
    finally:
        logger.setLevel(level)
    return quantization


def quantize(model: nn.Module, mode: str) -> nn.Module:
    """Quantize `model`'s linear layers in place (`qat`: after fake-quantized fine-tuning,
    convert to the int8-dynamic form it was trained for)."""
    ao = torchao()
    if mode == "int4-weight":
        _quantize_int4(model, ao)
        return model
    if mode == "qat":
        from torchao.quantization.qat import QATConfig

        ao.quantize_(model, QATConfig(step="convert"))  # fake quantizers out, plain Linear back
    config = (
        ao.Int8WeightOnlyConfig()
        if mode == "int8-weight"
        else ao.Int8DynamicActivationInt8WeightConfig()
    )
    ao.quantize_(model, config)
    return model


def _quantize_int4(model: nn.Module, ao) -> None:
    # torchao's Int4WeightOnlyConfig needs a GPU kernel library (mslk); the unpacked int4
    # layout runs on any CPU
    def grouped(module: nn.Module, _name: str) -> bool:
        return isinstance(module, nn.Linear) and module.in_features % INT4_GROUP == 0

    def per_row(module: nn.Module, _name: str) -> bool:
        return isinstance(module, nn.Linear) and module.in_features % INT4_GROUP != 0

    recipe = {"weight_dtype": torch.int4}
    ao.quantize_(
        model, ao.IntxWeightOnlyConfig(**recipe, granularity=ao.PerGroup(INT4_GROUP)), grouped
    )
    ao.quantize_(model, ao.IntxWeightOnlyConfig(**recipe, granularity=ao.PerAxis(0)), per_row)


def load_quantized(model: nn.Module, mode: str, tensors: dict, quantized: list[str]) -> nn.Module:
    """The float `model` (compressed widths) quantized with `mode`, its plain tensors and
    every quantized weight's integer data and scales set from `tensors`."""
    plain = {name: value for name, value in tensors.items() if name in model.state_dict()}
    model.load_state_dict({**model.state_dict(), **plain})
    quantize(model, "int8-dynamic" if mode == "qat" else mode)
    for name in quantized:
        module_name, _, attribute = name.rpartition(".")
        weight = getattr(model.get_submodule(module_name), attribute)
        with torch.no_grad():
            for part, target in tensor_parts(weight).items():
                saved = tensors[f"{name}.{part}"]
                if is_int4(weight) and part == "qdata":
                    saved = unpack_int4(saved, target.shape)
                target.copy_(saved)
    return model


def tensor_parts(value: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """A torchao tensor's inner tensors by name; None for a plain tensor."""
    names = getattr(value, "tensor_data_names", None)
    if names is None:
        return None
    optional = getattr(value, "optional_tensor_data_names", None) or []
    parts = {name: getattr(value, name) for name in [*names, *optional]}
    return {name: part for name, part in parts.items() if part is not None}


def is_int4(value: torch.Tensor) -> bool:
    return getattr(value, "target_dtype", None) == torch.int4


def unpack_int4(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    low, high = packed & 0x0F, packed >> 4
    flat = torch.stack([low, high], dim=1).flatten()[: shape.numel()]
    return (flat.to(torch.int16) - INT4_OFFSET).to(torch.int8).reshape(shape)


def compress_record(root: Path) -> tuple[str | None, list[str]] | None:
    """(quantize mode or None, quantized weights' names) from `root/compress.json`; None for
    a run that `scaletrain compress` did not write. A malformed record is one UserError."""
    record_file = root / COMPRESS_FILE
    if not record_file.is_file():
        return None
    record = read_json(record_file)
    mode = (record.get("options") or {}).get("quantize") if isinstance(record, dict) else "?"
    quantized = record.get("quantized") if isinstance(record, dict) else None
    if mode not in (*MODES, None) or not isinstance(quantized, list):
        raise UserError(f"{record_file}: not a compress record (options.quantize, quantized)")
    return mode, quantized


def quantization_of(root: Path) -> str | None:
    """The quantize mode `scaletrain compress` applied to the run in `root`, if any."""
    record = compress_record(root)
    return record[0] if record else None


def load_compressed_weights(root: Path, model: nn.Module) -> nn.Module:
    """`model` (the run's float model at its compressed widths, on the CPU) with the weights
    of `root/compressed.safetensors`, quantized as its record says; eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    record = compress_record(root)
    if record is None:
        raise UserError(f"{root}: not a compressed run (no {COMPRESS_FILE})")
    (mode, quantized), weights_file = record, root / WEIGHTS_FILE
    try:
        tensors = load_file(str(weights_file))
        if mode is None:
            model.load_state_dict(with_tied_aliases(model, tensors))
            return model.eval()
        return load_quantized(model, mode, tensors, quantized).eval()
    except (SafetensorError, OSError, KeyError, RuntimeError, AttributeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{weights_file}: does not match {COMPRESS_FILE} ({reason})") from None


def stored_once(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict for safetensors: a tied weight (a GPT's head and embedding, one tensor
    under two names) kept under its first name only, as safetensors refuses shared memory."""
    first: dict[tuple, str] = {}
    for name, tensor in state.items():
        first.setdefault((tensor.data_ptr(), tensor.dtype, tuple(tensor.shape)), name)
    return {name: state[name].detach().contiguous() for name in first.values()}


def with_tied_aliases(model: nn.Module, tensors: dict) -> dict:
    """`tensors` (stored once) with the model's tied names filled from their first name; a
    name missing for another reason stays missing, so load_state_dict names it."""
    state = model.state_dict()
    first: dict[tuple, str] = {}
    filled = dict(tensors)
    for name, tensor in state.items():
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape))
        owner = first.setdefault(key, name)
        if owner != name and name not in tensors and owner in tensors:
            filled[name] = tensors[owner]
    return filled


def load_quantized_run(float_run: Run) -> Run:
    """A quantized run's `Run` (its float `last` weights loaded) with the quantized model
    instead; `weights` names it, `metrics` (the float model's, in summary.json) are left out."""
    root = float_run.run_dir
    model = load_compressed_weights(root, float_run.model.cpu())
    return replace(
        float_run,
        model=model,
        config=float32_config(float_run.config),
        metrics={},
        weights={"name": weights_name(quantization_of(root)), "step": float_run.weights["step"]},
    )


def weights_name(mode: str) -> str:
    """How a quantized model's weights are named in tables and `Run.weights`."""
    return f"{mode} ({WEIGHTS_FILE})"


def float32_config(cfg: Config) -> Config:
    """`cfg` with `train.precision: "32"`: a quantized model runs its int8/int4 kernels on
    float32 activations (as compress measured it), not under autocast."""
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"precision": "32"})})
