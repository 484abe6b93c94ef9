"""What `scaletrain.evaluate`, `predict` and `load_run` do with a Run or a run directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from scaletrain.config import load_run_config
from scaletrain.data import DataSpec, build_data, read_inputs_file
from scaletrain.errors import UserError
from scaletrain.rundir import open_run_dir, read_json
from scaletrain.runfiles import checked_file
from scaletrain.trained.ensemble import load_ensemble_run
from scaletrain.trained.files import read_preprocessor, read_spec
from scaletrain.trained.handle import Run
from scaletrain.trained.inference import (
    evaluate_on,
    evaluate_tensors,
    predict_tensors,
)
from scaletrain.trained.labelled_file import read_labelled_file
from scaletrain.trained.quantized import load_quantized_run, quantization_of
from scaletrain.trained.weights import load_trained_model


def evaluate_run(
    run: str | Path | Run,
    *,
    data: tuple | list | str | Path | None,
    split: str,
    checkpoint: str | None,
    model: nn.Module | None,
) -> dict:
    """Metrics on `(inputs, targets)`, on a labelled file, or on one split of the run's data."""
    handle = run_handle(run, checkpoint=checkpoint, model=model)
    if isinstance(data, tuple | list):
        if len(data) != 2:
            raise UserError(f"data: expected (inputs, targets), got {len(data)} items")
        return handle.evaluate(*data)
    if isinstance(data, str | Path):
        spec, preprocessor = handle.spec_and_preprocessor()
        inputs, targets = read_labelled_file(
            data, handle.config.data, spec=spec, preprocessor=preprocessor
        )
        return evaluate_tensors(
            handle.model, inputs, targets, cfg=handle.config, spec=spec, preprocessor=preprocessor
        )
    if data is not None:
        raise UserError(
            f"data: expected (inputs, targets) or a file path, got {type(data).__name__}"
        )
    return _evaluate_split(handle, split)


def _evaluate_split(handle: Run, split: str) -> dict:
    cfg = handle.config
    if cfg.data.source == "tensors":
        raise UserError(
            f"{handle.run_dir} was trained on in-memory data, which the run directory does "
            "not keep; pass it: scaletrain.evaluate(run, data=(X, y)) or run.evaluate(X, y) "
            "(from the CLI: --data FILE)"
        )
    if split not in ("train", "val", "test"):
        raise UserError(f"--split: expected train, val or test, got {split!r}")
    bundle = build_data(cfg.data, seed=cfg.run.seed)
    data_split = getattr(bundle, split)
    if data_split is None:
        raise UserError(f"--split: {handle.run_dir} has no {split!r} split")
    return evaluate_on(
        handle.model,
        data_split,
        cfg=cfg,
        spec=bundle.spec,
        batch_size=256,
        inverse_target=bundle.preprocessor.inverse_target,
    )


def predict_run(run: str | Path | Run, inputs, *, checkpoint: str | None, model: nn.Module | None):
    """Arrays/tensors as `Run.predict`; a file as the CLI's dict of predictions."""
    if not isinstance(inputs, str | Path):
        return run_handle(run, checkpoint=checkpoint, model=model).predict(inputs)
    handle = run_handle(run, checkpoint=checkpoint, model=model)
    spec, preprocessor = handle.spec_and_preprocessor()
    raw = read_inputs_file(Path(inputs), spec=spec, feature_columns=handle.config.data.features)
    output = predict_tensors(
        handle.model,
        preprocessor.transform(raw),
        spec=spec,
        precision=handle.precision(handle.model, spec),
        inverse_target=preprocessor.inverse_target,
    )
    return _prediction_dict(output.numpy(), spec)


def _prediction_dict(output: np.ndarray, spec: DataSpec) -> dict:
    if spec.task == "classification":
        return {"pred": output.argmax(axis=1), "prob": output, "class_names": spec.class_names}
    return {"pred": output}


def load_run_dir(run_dir: str | Path, *, model: nn.Module | None, checkpoint: str | None) -> Run:
    """A Run from a directory: summary metrics, spec, preprocessing and loaded weights. A
    quantized run (`scaletrain compress --quantize`) gives its quantized model (a user
    module's run: `model` quantized) unless a `checkpoint` (its float weights) is asked for."""
    run = open_run_dir(run_dir)
    if checkpoint is None and quantization_of(run.root):
        return load_quantized_run(load_run_dir(run.root, model=model, checkpoint="last"))
    checkpoint = checkpoint or "best"
    cfg = load_run_config(run.config)
    if cfg.ensemble is not None:  # the members' networks combined in one module
        if isinstance(model, nn.Module):
            raise UserError(
                f"{run.root} is an ensemble: pass a factory returning a fresh module per "
                f"member, model=lambda: {type(model).__name__}(...), not an instance"
            )
        factory = model if callable(model) else None
        return load_ensemble_run(run.root, cfg, checkpoint=checkpoint, model_factory=factory)
    spec = read_spec(run)
    trained, path = load_trained_model(run, cfg, spec, checkpoint=checkpoint, model=model)
    has_summary = run.summary.exists() or run.summary.is_symlink()  # optional: a crashed run
    summary = checked_file(run.summary, read_json(run.summary)) if has_summary else {}
    step = int(path.name.removeprefix("step_"))
    return Run(
        run.root,
        _metrics_of(summary, step),
        trained,
        cfg,
        summary.get("status", "unknown"),
        weights={"name": checkpoint if checkpoint in ("best", "last") else path.name, "step": step},
        steps=summary.get("steps") or 0,
        spec=spec,
        preprocessor=read_preprocessor(run),
    )


def _metrics_of(summary: dict, step: int) -> dict:
    """The final metrics summary.json holds for the weights of `step` (none for others)."""
    if (summary.get("weights") or {}).get("step") == step:
        return summary.get("metrics") or {}
    if summary.get("steps") == step and summary.get("metrics_last"):
        return summary["metrics_last"]
    return {}


def run_handle(run: str | Path | Run, *, checkpoint: str | None, model: nn.Module | None) -> Run:
    """The Run to predict/evaluate with: a Run as it is, or a directory's `checkpoint`."""
    if isinstance(run, Run) and checkpoint is None and model is None:
        if run.model is None:
            raise UserError(
                f"{run.run_dir}: this Run holds no model; pass model=... to load its weights"
            )
        return run
    if isinstance(run, Run):
        run = run.run_dir
    if not isinstance(run, str | Path):
        raise UserError(f"run: expected a Run or a run directory, got {type(run).__name__}")
    return load_run_dir(run, model=model, checkpoint=checkpoint)
