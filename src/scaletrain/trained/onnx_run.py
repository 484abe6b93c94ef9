"""`scaletrain export RUN --format onnx`: a run's network with its scaling in one ONNX graph.

The graph takes what the run's encoder makes of raw data, unscaled: the raw features of an
array/table run, pixels of an image run, token ids of a text run, shaped (batch, *input
shape). The train-split scaling `(x - shift) / scale` (and for regression the inverse target
scaling) is inside the graph, so a deployment needs onnxruntime and nothing of scaletrain;
an encoder (table categories, tokenizer, image size) cannot be a graph op and is written as
JSON beside the file (`<name>.preprocess.json`), as the run directory holds it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from scaletrain.config import Config, UserModelConfig, load_run_config
from scaletrain.data import DataSpec, Preprocessor, build_data
from scaletrain.errors import UserError
from scaletrain.fileio import atomic_write_json
from scaletrain.rundir import RunDir, open_run_dir
from scaletrain.trained.access import load_run_dir
from scaletrain.trained.onnx_adapters import check_rewrite, exportable
from scaletrain.trained.onnx_export import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, export_onnx

MAX_SAMPLES = 256  # parity inputs: enough to cover the split's variety, fast to run twice


class DeployedModel(nn.Module):
    """Unscaled encoded inputs (B, *input_shape) -> logits, or values in the targets' units."""

    def __init__(self, network: nn.Module, preprocessor: Preprocessor, *, spec: DataSpec):
        super().__init__()
        self.network = network
        self.scaled = preprocessor.method != "none"
        shape = spec.input_shape
        if self.scaled:
            self.register_buffer("shift", _per_sample(preprocessor.shift, shape))
            self.register_buffer("scale", _per_sample(preprocessor.scale, shape))
        self.target = preprocessor.target if spec.task == "regression" else None

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.scaled:
            inputs = (inputs.to(torch.float32) - self.shift) / self.scale
        output = self.network(inputs).float()
        if self.target is not None:  # float64 as run.predict computes it, then fp32
            output = self.target.inverse(output).float()
        return output


def export_run_onnx(
    run_dir: str | Path,
    *,
    out: str | Path | None = None,
    checkpoint: str | None = None,
    opset: int = DEFAULT_OPSET,
    model: nn.Module | None = None,
) -> dict:
    """Export, verify and describe; returns what `export.json` (beside the file) holds. A
    quantized run without `checkpoint`: its quantized model."""
    run = open_run_dir(run_dir)
    cfg = load_run_config(run.config)
    _refuse(run, cfg, model)
    handle = load_run_dir(run.root, model=model, checkpoint=checkpoint)
    spec, preprocessor = handle.spec_and_preprocessor()
    network = handle.model.cpu().float().eval()
    deployed = DeployedModel(exportable(network), preprocessor, spec=spec).eval()
    inputs, origin = parity_inputs(cfg, spec, preprocessor)
    if deployed.network is not network:
        check_rewrite(DeployedModel(network, preprocessor, spec=spec).eval(), deployed, inputs)
    target = Path(out) if out else run.root / "model.onnx"
    figures = export_onnx(deployed, inputs[:2], target, inputs=inputs, opset=opset)
    description = {
        "file": target.name,
        "run": str(run.root),
        "checkpoint": handle.weights,
        "inputs": origin,
        **figures,
        "graph": _interface(spec, preprocessor),
    }
    if preprocessor.encoder is not None:
        sidecar = target.with_name(target.stem + ".preprocess.json")
        atomic_write_json(sidecar, {"data_spec": spec.to_dict(), **preprocessor.state_dict()})
        description["graph"]["encoder_file"] = sidecar.name
    atomic_write_json(target.with_name("export.json"), description)
    return {**description, "path": str(target)}


def parity_inputs(
    cfg: Config, spec: DataSpec, preprocessor: Preprocessor
) -> tuple[torch.Tensor, str]:
    """Up to MAX_SAMPLES unscaled inputs of the run's test split (val, train if none)."""
    if cfg.data.source == "tensors":  # in-memory data: not in the run directory
        return _random_inputs(spec), "random (the run's data is not in its directory)"
    bundle = build_data(cfg.data, seed=cfg.run.seed)
    name, split = next((n, s) for n, s in _splits(bundle) if s is not None and len(s))
    count = min(MAX_SAMPLES, len(split))
    if split.inputs is not None:  # scaled in memory: undo it (float64, then fp32)
        inputs = split.inputs[:count]
        if preprocessor.method != "none":
            shape = spec.input_shape
            shift = _per_sample(preprocessor.shift, shape).double()
            scale = _per_sample(preprocessor.scale, shape).double()
            inputs = (inputs.double() * scale + shift).float()
    else:  # a dataset (shards, user data): samples as stored, scaled per batch
        inputs = torch.stack([split.dataset[index][0] for index in range(count)])
    return inputs.to(spec.input_dtype), f"{name} split, {count} samples"


def _splits(bundle):
    return [("test", bundle.test), ("val", bundle.val), ("train", bundle.train)]


def _random_inputs(spec: DataSpec) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    shape = (MAX_SAMPLES, *spec.input_shape)
    if spec.input_dtype == torch.int64:
        return torch.randint(0, spec.vocab_size or 2, shape, generator=generator)
    return torch.randn(shape, generator=generator)


def _per_sample(values: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Statistics shaped to broadcast against one sample (per feature, or per channel)."""
    values = values.to(torch.float32)
    return values.reshape(shape) if values.numel() == _numel(shape) else values


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _interface(spec: DataSpec, preprocessor: Preprocessor) -> dict:
    outputs = {
        "classification": "logits (batch, classes): softmax gives run.predict's probabilities",
        "regression": "values (batch, outputs) in the targets' units",
        "language_model": "next-token logits (batch, tokens, vocab)",
    }
    return {
        "input": INPUT_NAME,
        "input_shape": ["batch", *spec.input_shape],
        "input_dtype": str(spec.input_dtype).removeprefix("torch."),
        "output": OUTPUT_NAME,
        "output_meaning": outputs.get(spec.task, spec.task),
        "scaling_in_graph": preprocessor.method,
        "class_names": spec.class_names,
    }


def _refuse(run: RunDir, cfg: Config, model: nn.Module | None) -> None:
    if cfg.ensemble is not None:
        raise UserError(
            f"{run.root}: ONNX export of an ensemble is not supported; export a member "
            f"(scaletrain export {run.root}/members/m0 --format onnx) or use safetensors"
        )
    if model is None and isinstance(cfg.model, UserModelConfig):
        raise UserError(
            f"{run.root} was trained with a user module ({cfg.model.class_name}); ONNX export "
            f"of a user module needs the Python API: scaletrain.export({str(run.root)!r}, "
            f'model={cfg.model.class_name}(...), format="onnx")'
        )


def figures_table(result: dict):
    """The parity and latency figures as a small rich table (the CLI prints it)."""
    from rich.table import Table

    latency = result["latency_ms"]
    table = Table(
        title=f"{result['file']}: max abs diff {result['max_abs_diff']:.2e} "
        f"({result['inputs']}; {result['exporter']} exporter, opset {result['opset']}, "
        f"{result['file_bytes'] / 1e6:.2f} MB)"
    )
    table.add_column("engine")
    for size in latency["torch"]:
        table.add_column(f"batch {size} (ms, median)", justify="right")
    for engine, by_size in latency.items():
        table.add_row(engine, *(f"{value:.3f}" for value in by_size.values()))
    return table
