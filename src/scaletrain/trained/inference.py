"""Predict and evaluate on in-memory inputs with a run's network, preprocessing and loss."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from scaletrain.config import Config
from scaletrain.data import DataSpec, Preprocessor, Split
from scaletrain.data.raw import RawTable, RawTexts
from scaletrain.data.transforms.labels import encode_targets
from scaletrain.errors import UserError
from scaletrain.optim import build_loss
from scaletrain.parallel import SingleStrategy
from scaletrain.train.evaluate import evaluate_split
from scaletrain.train.precision import Precision, run_precision

BATCH_SIZE = 1024  # rows per forward pass: bounded memory whatever the input size


def preprocess_inputs(inputs: Any, *, spec: DataSpec, preprocessor: Preprocessor) -> torch.Tensor:
    """Raw inputs (array, tensor, texts) -> the CPU tensor the network was trained on."""
    raw = _raw_inputs(inputs, spec=spec, preprocessor=preprocessor)
    if isinstance(raw, torch.Tensor):  # shaped before scaling: the statistics broadcast per sample
        raw = _as_samples(raw, spec)
    encoded = preprocessor.transform(raw)
    _check_sample_size(encoded, spec)
    return encoded.reshape(len(encoded), *spec.input_shape).to(spec.input_dtype)


def _as_samples(inputs: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    """(N, *input_shape) from flat rows or samples of that shape give or take size-1 axes
    (digits' (64,) or (8, 8) for (1, 8, 8)); another arrangement of the same number of values
    (an (H, W, C) image for a (C, H, W) run) is refused rather than silently reordered."""
    _check_sample_size(inputs, spec)
    shape, expected = tuple(inputs.shape[1:]), tuple(spec.input_shape)
    if inputs.ndim != 2 and _without_ones(shape) != _without_ones(expected):
        raise UserError(
            f"inputs: samples of shape {shape}; the run was trained on {expected}: pass them "
            f"in that shape or flat ({int(np.prod(expected))} values per sample)"
        )
    return inputs.reshape(len(inputs), *expected)


def _without_ones(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(size for size in shape if size != 1)


def _check_sample_size(inputs: torch.Tensor, spec: DataSpec) -> None:
    per_sample = int(np.prod(spec.input_shape))
    if inputs.ndim == 0 or int(np.prod(inputs.shape[1:])) != per_sample:
        raise UserError(
            f"inputs: samples of shape {tuple(inputs.shape[1:])}; the run was trained on "
            f"{tuple(spec.input_shape)} ({per_sample} values per sample)"
        )


def predict_arrays(
    model: nn.Module,
    inputs: Any,
    *,
    spec: DataSpec,
    preprocessor: Preprocessor,
    precision: Precision,
    batch_size: int = BATCH_SIZE,
) -> np.ndarray | torch.Tensor:
    """Class probabilities (N, classes) or values (N, outputs) of raw inputs; numpy in ->
    numpy out, tensor in -> tensor out (on the inputs' device)."""
    network_inputs = preprocess_inputs(inputs, spec=spec, preprocessor=preprocessor)
    result = predict_tensors(
        model,
        network_inputs,
        spec=spec,
        precision=precision,
        batch_size=batch_size,
        inverse_target=preprocessor.inverse_target,
    )
    return result.to(inputs.device) if isinstance(inputs, torch.Tensor) else result.numpy()


def predict_tensors(
    model: nn.Module,
    network_inputs: torch.Tensor,
    *,
    spec: DataSpec,
    precision: Precision,
    batch_size: int = BATCH_SIZE,
    inverse_target=None,
) -> torch.Tensor:
    """Probabilities or values (CPU, float32) of preprocessed inputs: batched on the model's
    device, in eval mode, without gradients; regression values in the targets' units
    (`inverse_target`: `Preprocessor.inverse_target`)."""
    device = device_of(model)
    outputs = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in network_inputs.split(batch_size):
                with precision.autocast():
                    output = model(precision.cast_inputs(batch.to(device))).float()
                if spec.task == "classification":
                    output = output.softmax(dim=1)
                elif spec.task == "regression" and inverse_target is not None:
                    output = inverse_target(output).float()
                outputs.append(output.cpu())
    finally:
        model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0, spec.num_outputs)


def evaluate_arrays(
    model: nn.Module,
    inputs: Any,
    targets: Any,
    *,
    cfg: Config,
    spec: DataSpec,
    preprocessor: Preprocessor,
    batch_size: int = BATCH_SIZE,
) -> dict:
    """The run's loss and metrics on raw (inputs, targets), as in its final metrics."""
    network_inputs = preprocess_inputs(inputs, spec=spec, preprocessor=preprocessor)
    encoded = encode_labels(targets, spec=spec, origin="targets")
    return evaluate_tensors(
        model,
        network_inputs,
        encoded,
        cfg=cfg,
        spec=spec,
        preprocessor=preprocessor,
        batch_size=batch_size,
    )


def evaluate_tensors(
    model: nn.Module,
    network_inputs: torch.Tensor,
    encoded: torch.Tensor,
    *,
    cfg: Config,
    spec: DataSpec,
    preprocessor: Preprocessor,
    batch_size: int = BATCH_SIZE,
) -> dict:
    """Loss and metrics of preprocessed inputs and encoded targets (regression targets in
    their original units: scaled here as the model trained on them)."""
    if len(encoded) != len(network_inputs):
        raise UserError(f"data: {len(network_inputs)} inputs but {len(encoded)} targets")
    if len(encoded) == 0:
        raise UserError("data: has no samples to evaluate")
    if spec.task == "regression":
        encoded = preprocessor.transform_target(encoded)
    split = Split(inputs=network_inputs, targets=encoded)
    return evaluate_on(
        model,
        split,
        cfg=cfg,
        spec=spec,
        batch_size=batch_size,
        inverse_target=preprocessor.inverse_target,
    )


def evaluate_on(
    model: nn.Module,
    split: Split,
    *,
    cfg: Config,
    spec: DataSpec,
    batch_size: int = BATCH_SIZE,
    inverse_target=None,
) -> dict:
    """The run's loss (`cfg.loss`) and metrics over a split, in one process on the model's
    device, as its final metrics were computed (the split's regression targets scaled as in
    training; `inverse_target` turns metrics back into the targets' units)."""
    device = device_of(model)
    loss_fn = build_loss(
        cfg.loss,
        task=spec.task,
        num_outputs=spec.num_outputs,
        class_counts=spec.class_counts,
    ).to(device)
    result = evaluate_split(
        model,
        split,
        spec=spec,
        loss_fn=loss_fn,
        precision=run_precision(
            cfg.train.precision, device, model=model, spec=spec, batch_size=cfg.train.batch_size
        ),
        strategy=SingleStrategy(device),
        batch_size=batch_size,
        inverse_target=inverse_target,
    )
    return {"loss": result.loss, **result.metrics}


def encode_labels(targets: Any, *, spec: DataSpec, origin: str, locate=None) -> torch.Tensor:
    """Targets as the run's loss reads them: class ids in the run's class order (labels
    given by class name or by id), or float32 (N, outputs) values."""
    labels = _numpy(targets, what="targets", kinds="biufUSO")
    if spec.task == "regression":
        return encode_targets(labels, task="regression", class_names=None, origin=origin).values
    if spec.task != "classification":
        raise UserError(f"{origin}: evaluating a {spec.task} run on arrays is not supported")
    names = spec.class_names or [str(index) for index in range(spec.num_outputs)]
    flat = labels.reshape(len(labels), -1)[:, 0] if labels.ndim else labels
    if flat.dtype.kind in "iuf" and not _all_names(flat, names) and _all_ids(flat, len(names)):
        return torch.from_numpy(flat.astype(np.int64))  # ids of classes named otherwise
    return encode_targets(
        labels,
        task="classification",
        class_names=None,
        origin=origin,
        declared=names,
        locate=locate or (lambda row: f"{origin}[{row}]"),
    ).values


def _all_names(labels: np.ndarray, names: list[str]) -> bool:
    texts = labels.astype(np.int64) if np.array_equal(labels, np.round(labels)) else labels
    return set(texts.astype(str).tolist()) <= set(names)


def _all_ids(labels: np.ndarray, num_classes: int) -> bool:
    return bool(
        np.array_equal(labels, np.round(labels))
        and labels.min() >= 0
        and labels.max() < num_classes
    )


def _raw_inputs(inputs: Any, *, spec: DataSpec, preprocessor: Preprocessor) -> Any:
    """What the preprocessor reads: a tensor for arrays, RawTexts/RawTable for its encoder."""
    kind = getattr(preprocessor.encoder, "kind", None)
    if kind == "text":
        texts = inputs.tolist() if isinstance(inputs, np.ndarray) else inputs
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            raise UserError("inputs: this run reads texts; pass a list of strings")
        return RawTexts(np.array(texts, dtype=object))
    array = _numpy(inputs, what="inputs")
    if kind == "table":
        if preprocessor.encoder.categories:
            raise UserError(
                "inputs: this run encodes categorical columns; predict from a file instead: "
                "scaletrain.predict(run, 'inputs.csv')"
            )
        return RawTable(array.reshape(len(array), -1).astype(np.float64), [], {})
    if kind is not None:
        raise UserError(f"inputs: this run reads {kind} files; pass a file or folder path")
    dtype = np.float32 if spec.input_dtype == torch.float32 else np.int64
    return torch.from_numpy(np.ascontiguousarray(array, dtype=dtype))


def _numpy(values: Any, *, what: str, kinds: str = "biuf") -> np.ndarray:
    """An array (tensor, list, pandas object: anything numpy reads) of the dtype `kinds`."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        if values.dtype == torch.bfloat16:  # numpy has no bfloat16
            values = values.float()
        return values.numpy()
    if isinstance(values, np.ndarray | list | tuple) or hasattr(values, "__array__"):
        array = np.asarray(values)
        if array.dtype.kind in kinds:
            return array
        got = f"an array of dtype {array.dtype}"
    else:
        got = type(values).__name__
    expected = "numbers" if kinds == "biuf" else "numbers or class names"
    raise UserError(f"{what}: expected a numpy array or torch tensor of {expected}, got {got}")


def device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


class PreprocessedModel(nn.Module):
    """The run's scaling, then its network: takes raw float tensors (of array-trained runs)."""

    def __init__(self, network: nn.Module, preprocessor: Preprocessor, *, spec: DataSpec):
        super().__init__()
        if preprocessor.encoder is not None:
            raise UserError(
                f"run.with_preprocessing(): this run encodes {preprocessor.encoder.kind} "
                "inputs, which a tensor cannot carry; use run.predict(...)"
            )
        self.network = network
        self.preprocessor = preprocessor
        self.input_shape = tuple(spec.input_shape)
        self.task = spec.task

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        # shaped first (flat rows of an image run too): the statistics broadcast per sample
        scaled = self.preprocessor.transform(inputs.reshape(len(inputs), *self.input_shape))
        output = self.network(scaled)
        if self.task == "regression":  # values in the targets' units, like run.predict
            return self.preprocessor.inverse_target(output).to(output.dtype)
        return output
