"""The Python API: train, resume, evaluate, predict, load_run. The CLI is a thin layer on top."""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import nn

import scaletrain
from scaletrain._alloc import tune_malloc
from scaletrain.checkpoint import CheckpointStore
from scaletrain.config import Config, UserModelConfig, load_config
from scaletrain.data import DataBundle, DataSpec, Preprocessor, build_data, read_inputs_file
from scaletrain.errors import ConfigError, UserError
from scaletrain.fileio import atomic_write_json, atomic_write_text
from scaletrain.finish import finish_run, wait_for_reports
from scaletrain.metrics import peak_rss_mb
from scaletrain.models import ModelSummary, build_model, summarize_model, summary_table
from scaletrain.optim import check_implementation
from scaletrain.parallel import build_strategy
from scaletrain.rundir import RunDir, RunLock, open_run_dir, prepare_run_dir, read_json
from scaletrain.train.callbacks import CallbackList
from scaletrain.train.evaluate import evaluate_split
from scaletrain.train.loop import LoopResult, run_loop
from scaletrain.train.monitor import check_monitor
from scaletrain.train.plan import check_batch_norm, make_plan
from scaletrain.train.precision import Precision
from scaletrain.train.rng import seed_everything

warnings.filterwarnings("ignore", message="torch.distributed is disabled")
MAX_SUMMARY_ROWS = 60  # at the start of a run: deeper layers give way (the file has all)


@dataclass
class Run:
    """A finished (or stopped) run: where it lives, its final metrics and the trained model."""

    run_dir: Path
    metrics: dict  # split -> metric -> value, of the weights in `model` (see `weights`)
    model: nn.Module | None
    config: Config
    status: str = "finished"
    exit_code: int = 0  # 128 + signal number when stopped by SIGTERM/SIGINT
    # which weights `metrics` and `model` hold: {"name": "best" | "last", "step": N}
    weights: dict | None = None
    metrics_last: dict | None = None  # the last weights' metrics, where the best are older
    steps: int = 0  # optimizer steps taken

    def wait(self) -> Run:
        """Block until report.html is written: `train()` returns before it (a background
        thread draws it; the process waits for it at exit). Call it before deleting the
        run directory."""
        wait_for_reports()
        return self


def train(
    config: str | Path | dict | Config,
    *,
    model: nn.Module | None = None,
    data: dict | None = None,
    overrides: list[str] = (),
    overwrite: bool = False,
    callbacks: list = (),
) -> Run:
    """Train from a config (YAML path, dict or Config).

    Args:
        config: the run's configuration.
        model: any ``nn.Module`` to train instead of the config's registry model.
        data: ``{"train": Dataset | (X, y), "val": ..., "test": ...}`` instead of ``data.source``.
        overrides: dotted ``KEY=VALUE`` strings applied on top of ``config``.
        overwrite: replace an existing run directory of the same name.
        callbacks: objects with any of the ``train.callbacks`` events.
    """
    tune_malloc()  # before the first training allocations; a no-op where MALLOC_* is set
    wait_for_reports(raise_errors=False)  # the last run's report: one drawing at a time
    cfg = load_config(config, list(overrides))
    if model is not None:
        cfg = _replace(cfg, model=UserModelConfig(class_name=type(model).__qualname__))
    if data is not None:
        cfg = _replace(cfg, data=cfg.data.model_copy(update={"source": "tensors"}))
    strategy = build_strategy(cfg.parallel, device_name=cfg.train.device)
    strategy.setup()
    lock = RunLock(Path(cfg.run.out_dir) / cfg.run.name)
    try:
        # bad input fails before any file is written
        bundle, model, plan = _prepare(cfg, model, data, strategy)
        run = None
        if strategy.is_main:  # locked before an --overwrite empties the directory
            run = prepare_run_dir(cfg.run.out_dir, cfg.run.name, overwrite=overwrite, lock=lock)
            atomic_write_text(run.config, cfg.to_yaml())
            atomic_write_json(run.preprocess, bundle.preprocessor.state_dict())
            atomic_write_json(run.root / "data_spec.json", _spec_to_dict(bundle.spec))
            _write_model_summary(run, model, bundle.spec, show=cfg.log.progress)
        strategy.barrier()
        run = run or RunDir(Path(cfg.run.out_dir) / cfg.run.name)
        try:
            return _fit(run, cfg, strategy, bundle, model, plan, resume=False, callbacks=callbacks)
        except ConfigError:
            if strategy.is_main:
                _remove_if_untrained(run)  # refused late: leave no half-made run directory
            raise
    finally:
        lock.release()
        strategy.teardown()


def resume(run_dir: str | Path, *, model: nn.Module | None = None, data: dict | None = None) -> Run:
    """Continue an interrupted run from its newest valid checkpoint."""
    tune_malloc()
    wait_for_reports(raise_errors=False)
    run = open_run_dir(run_dir)
    cfg = load_config(run.config)
    if isinstance(cfg.model, UserModelConfig) and model is None:
        raise UserError(
            f"{run.root} was trained with a user module ({cfg.model.class_name}); "
            "resume it from Python: scaletrain.api.resume(run_dir, model=..., data=...)"
        )
    strategy = build_strategy(cfg.parallel, device_name=cfg.train.device)
    strategy.setup()
    lock = RunLock(run.root)
    try:
        if strategy.is_main:
            lock.acquire()  # one writer: a run still training is not resumed beside itself
        bundle, model, plan = _prepare(cfg, model, data, strategy)
        if strategy.is_main:  # the table was printed when the run began
            _write_model_summary(run, model, bundle.spec, show=False)
        return _fit(run, cfg, strategy, bundle, model, plan, resume=True, callbacks=())
    finally:
        lock.release()
        strategy.teardown()


def _prepare(cfg: Config, model: nn.Module | None, data: dict | None, strategy):
    """Data, model and plan, built identically on every rank (same seed: same split and
    weights); a plan that cannot train fails here, before the run directory exists."""
    bundle, model = _data_and_model(cfg, model, data)
    plan = make_plan(
        cfg.train,
        world_size=strategy.world_size,
        num_train_samples=len(bundle.train),
        drop_last=cfg.data.drop_last,
    )
    check_batch_norm(plan, model)
    check_implementation(
        cfg.optim,
        device_type=strategy.device.type,
        param_dtype=Precision.from_config(cfg.train.precision, strategy.device).param_dtype,
        sharded=cfg.parallel.strategy == "fsdp",
    )
    return bundle, model, plan


def _data_and_model(cfg: Config, model: nn.Module | None, data: dict | None):
    seed_everything(cfg.run.seed)
    bundle = build_data(cfg.data, seed=cfg.run.seed, user_data=data)
    check_monitor(cfg.train.monitor, task=bundle.spec.task)
    if model is None:
        model = _build_model(cfg, bundle.spec)
    return bundle, model


def _fit(
    run: RunDir, cfg: Config, strategy, bundle, model, plan, *, resume: bool, callbacks
) -> Run:
    seed_everything(cfg.run.seed + 1000 * strategy.rank + 1)  # per-rank dropout/noise streams
    status, result = "failed", None
    try:
        result = run_loop(
            cfg,
            model=model,
            data=bundle,
            run=run,
            strategy=strategy,
            plan=plan,
            resume=resume,
            callbacks=CallbackList(list(callbacks)),
        )
        status = result.status
        if result.error is not None:
            raise result.error  # after the loop closed its files; the summary has its step
        if status != "interrupted":
            final = _final_evaluation(result, bundle, run, strategy)
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if strategy.is_main:
            # where the run failed (a full disk, say), a summary that cannot be written
            # either must not mask the first error: it is what the user needs to read
            with contextlib.suppress(OSError) if sys.exc_info()[1] else contextlib.nullcontext():
                _write_summary(run, cfg, strategy, result, status, locals().get("final"))
    final = locals().get("final") or FinalMetrics({}, None, None)
    if strategy.is_main:  # after the result: in a background thread (finish.py says why)
        finish_run(
            run.root,
            hparams=cfg.to_dict() if cfg.log.tensorboard and status != "interrupted" else None,
            final_metrics=final.metrics,
            report=cfg.log.report,
            background=strategy.world_size == 1,  # ranks tear the group down: finish first
        )
    trained = strategy.unwrap_model(result.state.model)
    exit_code = 128 + result.stop_signal if result.stop_signal else 0
    return Run(
        run.root,
        final.metrics,
        trained,
        cfg,
        status,
        exit_code,
        weights=final.weights,
        metrics_last=final.metrics_last,
        steps=result.state.step,
    )


@dataclass(frozen=True)
class FinalMetrics:
    metrics: dict  # split -> metrics of the returned weights
    weights: dict | None  # {"name": "best" | "last", "step": N}
    metrics_last: dict | None  # the last weights' metrics, where the best are older


def _final_evaluation(
    result: LoopResult, bundle: DataBundle, run: RunDir, strategy
) -> FinalMetrics:
    """Evaluate the best weights (else the last) on val and test, keeping predictions for the
    report; where the best are older than the last, the last weights' metrics too."""
    best = CheckpointStore(run.checkpoints).best_step()
    last = result.state.step
    if best is None or best == last:
        metrics = _evaluate_splits(result, bundle, run, strategy, keep_predictions=True)
        return FinalMetrics(metrics, {"name": "last", "step": last}, None)
    metrics_last = _evaluate_splits(result, bundle, run, strategy, keep_predictions=False)
    _load_weights(result.state.model, CheckpointStore(run.checkpoints).find("best"), strategy)
    metrics = _evaluate_splits(result, bundle, run, strategy, keep_predictions=True)
    return FinalMetrics(metrics, {"name": "best", "step": best}, metrics_last)


def _evaluate_splits(
    result: LoopResult, bundle: DataBundle, run: RunDir, strategy, *, keep_predictions: bool
) -> dict:
    metrics = {}
    for name in ("val", "test"):
        split = getattr(bundle, name)
        if split is None:
            continue
        evaluated = evaluate_split(
            result.state.model,
            split,
            spec=bundle.spec,
            loss_fn=result.loss_fn,
            precision=result.precision,
            strategy=strategy,
            batch_size=256,
            keep_predictions=keep_predictions,
        )
        metrics[name] = {"loss": evaluated.loss, **evaluated.metrics}
        if strategy.is_main and evaluated.predictions:
            run.predictions.mkdir(exist_ok=True)
            np.savez_compressed(run.predictions / f"{name}.npz", **evaluated.predictions)
    return metrics


def summarize(config: str | Path | dict | Config, *, overrides: list[str] = ()) -> ModelSummary:
    """The config's model summarized (layers, shapes, parameters, size, FLOPs), untrained."""
    cfg = load_config(config, list(overrides))
    bundle, model = _data_and_model(cfg, None, None)  # the data: input shape and outputs
    return summarize_model(model, bundle.spec.input_shape, input_dtype=bundle.spec.input_dtype)


def evaluate(run: str | Path | Run, *, split: str = "test", checkpoint: str = "best") -> dict:
    """Reload a run's model from a checkpoint and evaluate it on one split."""
    run_dir = open_run_dir(run.run_dir if isinstance(run, Run) else run)
    cfg = load_config(run_dir.config)
    if cfg.data.source == "tensors":
        raise UserError(f"{run_dir.root} was trained on in-memory data; evaluate it from Python")
    if split not in ("train", "val", "test"):
        raise UserError(f"--split: expected train, val or test, got {split!r}")
    bundle = build_data(cfg.data, seed=cfg.run.seed)
    model, strategy, precision = _load_model(run_dir, cfg, bundle.spec, checkpoint)
    data_split = getattr(bundle, split)
    if data_split is None:
        raise UserError(f"--split: {run_dir.root} has no {split!r} split")
    from scaletrain.optim import build_loss

    loss_fn = build_loss(
        cfg.loss,
        task=bundle.spec.task,
        num_outputs=bundle.spec.num_outputs,
        class_counts=bundle.spec.class_counts,
    )
    result = evaluate_split(
        model,
        data_split,
        spec=bundle.spec,
        loss_fn=loss_fn,
        precision=precision,
        strategy=strategy,
        batch_size=256,
    )
    return {"loss": result.loss, **result.metrics}


def predict(run: str | Path, inputs_file: str | Path, *, checkpoint: str = "best") -> dict:
    """Predictions for raw inputs in a CSV/NPY file, with the run's saved preprocessing."""
    run_dir = open_run_dir(run)
    cfg = load_config(run_dir.config)
    spec = _read_run_file(run_dir.root / "data_spec.json", _spec_from_dict)
    preprocessor = _read_run_file(run_dir.preprocess, Preprocessor.from_state_dict)
    raw = read_inputs_file(Path(inputs_file), spec=spec, feature_columns=cfg.data.features)
    model, strategy, precision = _load_model(run_dir, cfg, spec, checkpoint)
    with torch.no_grad(), precision.autocast():
        output = model(preprocessor.transform(raw).to(strategy.device)).float().cpu()
    if spec.task == "classification":
        probabilities = output.softmax(dim=1)
        return {
            "pred": probabilities.argmax(dim=1).numpy(),
            "prob": probabilities.numpy(),
            "class_names": spec.class_names,
        }
    return {"pred": output.numpy()}


def load_run(run_dir: str | Path, *, checkpoint: str = "best") -> Run:
    """A finished run with its model rebuilt and weights loaded (no training)."""
    run = open_run_dir(run_dir)
    cfg = load_config(run.config)
    spec = _read_run_file(run.root / "data_spec.json", _spec_from_dict)
    model = _load_model(run, cfg, spec, checkpoint)[0] if cfg.model.name != "user" else None
    summary = _read_run_file(run.summary, dict) if run.summary.is_file() else {}
    return Run(run.root, summary.get("metrics", {}), model, cfg, summary.get("status", "unknown"))


def export(run_dir: str | Path, *, out: str | Path | None = None, checkpoint: str = "best") -> Path:
    """Full, unsharded weights as safetensors (no pickle), with the resolved config inside."""
    from scaletrain.checkpoint.export import export_safetensors

    run = open_run_dir(run_dir)
    target = Path(out) if out else run.root / "model.safetensors"
    return export_safetensors(
        run.checkpoints, target, which=checkpoint, config_text=run.config.read_text()
    )


# --- helpers ------------------------------------------------------------------------------
def _build_model(cfg: Config, spec: DataSpec) -> nn.Module:
    return build_model(
        cfg.model,
        input_shape=spec.input_shape,
        num_outputs=spec.num_outputs,
        vocab_size=spec.vocab_size,
    )


def _remove_if_untrained(run: RunDir) -> None:
    """A run refused before its first update (a config mismatch only the built model or
    loss could see) leaves nothing behind, so the corrected rerun is not refused."""
    summary = read_json(run.summary) if run.summary.is_file() else {}
    if not summary.get("steps") and not any(run.checkpoints.glob("step_*")):
        shutil.rmtree(run.root, ignore_errors=True)


def _write_model_summary(run: RunDir, model: nn.Module, spec: DataSpec, *, show: bool) -> None:
    """model_summary.json for the report; with `show` (`log.progress`, the console output
    of a run) the table once on stderr (stdout carries results)."""
    summary = summarize_model(model, spec.input_shape, input_dtype=spec.input_dtype)
    atomic_write_json(run.model_summary, summary.to_dict())
    if show:
        Console(stderr=True).print(summary_table(summary, max_rows=MAX_SUMMARY_ROWS))


def _load_model(run: RunDir, cfg: Config, spec: DataSpec, checkpoint: str):
    if cfg.model.name == "user":
        raise UserError(f"{run.root} holds a user module; load its weights from Python")
    strategy = build_strategy(
        cfg.parallel.model_copy(update={"strategy": "single"}), device_name=cfg.train.device
    )
    model = _build_model(cfg, spec).to(strategy.device)
    _load_weights(model, CheckpointStore(run.checkpoints).find(checkpoint), strategy)
    model.eval()
    return model, strategy, Precision.from_config(cfg.train.precision, strategy.device)


def _load_weights(model: nn.Module, path: Path, strategy) -> None:
    from scaletrain.checkpoint.state_dict import load_model_state, model_state

    tensors = {"model": model_state(model)}
    CheckpointStore(path.parent).load(path, tensors=tensors, rank=strategy.rank)
    load_model_state(model, tensors["model"])


def _write_summary(
    run: RunDir, cfg: Config, strategy, result, status: str, final: FinalMetrics | None
) -> None:
    state = result.state if result else None
    final = final or FinalMetrics({}, None, None)
    seconds = result.train_seconds if result else 0.0
    summary = {
        "status": status,
        "name": cfg.run.name,
        "task": None,
        "wall_s": round(result.wall_s, 3) if result else None,
        "world_size": strategy.world_size,
        "device": str(strategy.device),
        "precision": result.precision.name if result else cfg.train.precision,
        "versions": {
            "scaletrain": scaletrain.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "steps": state.step if state else 0,
        "epochs": state.epoch if state else 0,
        "best_step": state.best_step if state else None,
        "best_metric": {"name": cfg.train.monitor.metric, "value": state.best_value}
        if state
        else None,
        "metrics": final.metrics,
        "weights": final.weights,  # which weights `metrics` are of: best (step N) or last
        "metrics_last": final.metrics_last,  # where the best weights are older than the last
        "train_samples_per_s": result.samples_seen / seconds if result and seconds else None,
        "peak_rss_mb": peak_rss_mb(),
        "memory": strategy.memory_report(),  # planner estimate vs measured peak, per rank
        "mfu": result.mfu if result else None,
        "overhead_fraction": result.overhead_fraction if result else None,
        "compile_s": result.compile_s if result else None,
        "counters": state.counters if state else {},
        "stop_signal": result.stop_signal if result else None,
    }
    spec_file = run.root / "data_spec.json"
    if spec_file.is_file():
        spec = read_json(spec_file)
        summary["task"], summary["class_names"] = spec["task"], spec["class_names"]
    atomic_write_json(run.summary, summary)


def _read_run_file(path: Path, parse):
    """`parse(JSON of path)`; what it cannot parse (a file tampered with, or not written by
    scaletrain) is one UserError line naming the file, not a traceback."""
    data = read_json(path)
    try:
        return parse(data)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
        raise UserError(
            f"{path}: not a file this scaletrain wrote ({reason[:100]}); was it edited?"
        ) from None


def _spec_to_dict(spec: DataSpec) -> dict:
    data = dataclasses.asdict(spec)
    data["input_dtype"] = str(spec.input_dtype).removeprefix("torch.")
    data["input_shape"] = list(spec.input_shape)
    return data


def _spec_from_dict(data: dict) -> DataSpec:
    data = dict(data)
    dtype = getattr(torch, data["input_dtype"], None)
    if not isinstance(dtype, torch.dtype):  # the name of a dtype, nothing else of torch
        raise ValueError(f"input_dtype {str(data['input_dtype'])[:40]!r} is not a torch dtype")
    data["input_dtype"] = dtype
    data["input_shape"] = tuple(data["input_shape"])
    return DataSpec(**data)


def _replace(cfg: Config, **sections) -> Config:
    return Config.model_validate(
        {**cfg.to_dict(), **{k: v.model_dump() for k, v in sections.items()}}
    )
