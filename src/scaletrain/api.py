"""The Python API: train, resume, evaluate, predict, load_run. The CLI is a thin layer on top."""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import shutil
import sys
import warnings
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

import scaletrain
from scaletrain._alloc import tune_malloc
from scaletrain.config import Config, UserModelConfig, load_config
from scaletrain.data import DataBundle, DataSpec, build_data
from scaletrain.errors import ConfigError, UserError
from scaletrain.fileio import atomic_write_json, atomic_write_text, read_jsonl, read_text_file
from scaletrain.finish import finish_run, wait_for_reports
from scaletrain.metrics import peak_rss_mb
from scaletrain.models import ModelSummary, summarize_model, summary_table
from scaletrain.optim import check_implementation
from scaletrain.parallel import build_strategy
from scaletrain.rundir import (
    API_REUSE_HINT,
    RunDir,
    RunLock,
    append_record,
    open_run_dir,
    prepare_run_dir,
    read_json,
)
from scaletrain.train.callbacks import CallbackList
from scaletrain.train.extend import RunFinished, finished_message, resume_config
from scaletrain.train.final import NO_METRICS, FinalMetrics, final_evaluation
from scaletrain.train.loop import LoopResult, run_loop
from scaletrain.train.model_check import check_model_fits
from scaletrain.train.monitor import check_monitor
from scaletrain.train.plan import check_batch_norm, make_plan
from scaletrain.train.precision import Precision
from scaletrain.train.process_settings import restored_process_settings
from scaletrain.train.ps_serve import serve_parameters
from scaletrain.train.rng import seed_everything
from scaletrain.trained import Run, evaluate_run, load_run_dir, predict_run, read_spec, run_handle
from scaletrain.trained.teacher import load_teacher
from scaletrain.trained.weights import build_run_model

warnings.filterwarnings("ignore", message="torch.distributed is disabled")
MAX_SUMMARY_ROWS = 60  # at the start of a run: deeper layers give way (the file has all)


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
    _refuse_ensemble(cfg)
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
        teacher = _teacher(cfg, bundle)
        # config.yaml and run.config record the task the data resolved, not `auto`
        cfg = _replace(cfg, data=cfg.data.model_copy(update={"task": bundle.spec.task}))
        run = None
        if strategy.is_main:  # locked before an --overwrite empties the directory
            run = prepare_run_dir(
                cfg.run.out_dir,
                cfg.run.name,
                overwrite=overwrite,
                lock=lock,
                reuse_hint=API_REUSE_HINT,  # the CLI words it with its flags
            )
            atomic_write_text(run.config, cfg.to_yaml())
            atomic_write_json(run.preprocess, bundle.preprocessor.state_dict())
            atomic_write_json(run.root / "data_spec.json", _spec_to_dict(bundle.spec))
            _write_model_summary(run, model, bundle.spec, show=cfg.log.progress)
        strategy.barrier()
        run = run or RunDir(Path(cfg.run.out_dir) / cfg.run.name)
        try:
            return _fit(
                run,
                cfg,
                strategy,
                bundle,
                model,
                plan,
                resume=False,
                callbacks=callbacks,
                teacher=teacher,
            )
        except ConfigError:
            if strategy.is_main:
                _remove_if_untrained(run)  # refused late: leave no half-made run directory
            raise
    finally:
        lock.release()
        strategy.teardown()


def resume(
    run_dir: str | Path,
    *,
    model: nn.Module | None = None,
    data: dict | None = None,
    overrides: list[str] = (),
) -> Run:
    """Continue an interrupted run from its newest valid checkpoint, or extend a finished one.

    Args:
        run_dir: the run directory.
        model: the user module the run was trained with (runs of a user module only).
        data: the user data the run was trained on, as given to ``train``.
        overrides: ``KEY=VALUE`` strings that leave the steps already taken as they were
            (``train.max_epochs=50``, ``log.*``, ``checkpoint.*``: train/extend.py); the new
            values are recorded in the run's config.yaml.
    """
    tune_malloc()
    wait_for_reports(raise_errors=False)
    run = open_run_dir(run_dir)
    saved_text = read_text_file(run.config)
    spec_file = run.root / "data_spec.json"
    if spec_file.exists() or spec_file.is_symlink():  # an edited one: refused before training
        read_spec(run)
    cfg = resume_config(
        run.config, list(overrides), has_model=model is not None, check=_refuse_ensemble
    )
    strategy = build_strategy(cfg.parallel, device_name=cfg.train.device)
    strategy.setup()
    lock = RunLock(run.root)
    try:
        if strategy.is_main:
            lock.acquire()  # one writer: a run still training is not resumed beside itself
        bundle, model, plan = _prepare(cfg, model, data, strategy)
        teacher = _teacher(cfg, bundle)
        if strategy.is_main:  # the table was printed when the run began
            _write_model_summary(run, model, bundle.spec, show=False)
            if overrides:  # the extended run's config.yaml records the new values
                atomic_write_text(run.config, cfg.to_yaml())
        try:
            return _fit(
                run, cfg, strategy, bundle, model, plan, resume=True, callbacks=(), teacher=teacher
            )
        except RunFinished as finished:
            if strategy.is_main and overrides:
                atomic_write_text(run.config, saved_text)  # refused: the run stays as it was
            raise UserError(finished_message(str(run.root), cfg, finished)) from None
    finally:
        lock.release()
        strategy.teardown()


def _prepare(cfg: Config, model: nn.Module | None, data: dict | None, strategy):
    """Data, model and plan, built identically on every rank (same seed: same split and
    weights); a plan that cannot train fails here, before the run directory exists."""
    # a parameter server holds only its shard: its registry model is built without values
    bundle, model = _data_and_model(cfg, model, data, meta=strategy.is_server)
    plan = make_plan(
        cfg.train,
        world_size=strategy.data_shard()[1],  # pipeline stages read the same batch
        num_train_samples=len(bundle.train),
        drop_last=cfg.data.drop_last,
    )
    check_batch_norm(plan, model)
    strategy.check_model(model, model_name=cfg.model.name)  # TP needs a plan, pp the GPT
    if not strategy.is_server:  # the workers check it; a server may hold no values
        check_model_fits(model, bundle, loss_name=cfg.loss.name)
    check_implementation(
        cfg.optim,
        device_type=strategy.device.type,
        param_dtype=Precision.from_config(cfg.train.precision, strategy.device).param_dtype,
        sharded=cfg.parallel.strategy == "fsdp",
    )
    return bundle, model, plan


def _teacher(cfg: Config, bundle: DataBundle):
    """`distill.teacher` loaded and checked against this run's data (None: no distillation)."""
    if cfg.distill is None:
        return None
    return load_teacher(cfg, spec=bundle.spec, preprocessor=bundle.preprocessor)


def _data_and_model(cfg: Config, model: nn.Module | None, data: dict | None, *, meta=False):
    seed_everything(cfg.run.seed)
    bundle = build_data(cfg.data, seed=cfg.run.seed, user_data=data)
    check_monitor(cfg.train.monitor, task=bundle.spec.task)
    if model is None:
        with torch.device("meta") if meta else contextlib.nullcontext():
            model = build_run_model(cfg, bundle.spec)
    return bundle, model


@restored_process_settings()  # train.num_threads is the run's, not the caller's for good
def _fit(
    run: RunDir, cfg: Config, strategy, bundle, model, plan, *, resume: bool, callbacks, teacher
) -> Run:
    if strategy.is_server:  # a parameter server's process serves until the workers are done
        updates = serve_parameters(cfg, model, run=run, strategy=strategy, resume=resume)
        return Run(run.root, {}, model, cfg, "served", 0, steps=updates)
    if strategy.is_spare and not _spare_took_over(strategy, resume=resume):
        return Run(run.root, {}, model, cfg, "spare", 0, steps=0)  # the run ended without it
    resume = resume and not strategy.is_spare  # a spare: the lost worker's position instead
    # per data-parallel rank dropout/noise streams; tensor-parallel peers share theirs
    seed_everything(cfg.run.seed + 1000 * strategy.data_shard()[0] + 1)
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
            teacher=teacher,
        )
        if result.error is not None:
            raise result.error  # after the loop closed its files; the summary has its step
        _strategy_record(run, strategy, result, plan)  # async_ps: a server lost at the end?
        if result.status != "interrupted":
            final = final_evaluation(result, bundle, run, strategy)
        result.commit_final_save()  # written in the background during the evaluation
        status = result.status
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except RunFinished:
        status = "unchanged"  # a resume found nothing left to train: keep its summary
        raise
    finally:
        if result is not None:
            result.drain_final_save()  # an error before the commit: let the write end first
        if strategy.is_main and status != "unchanged":
            # where the run failed (a full disk, say), a summary that cannot be written
            # either must not mask the first error: it is what the user needs to read
            with contextlib.suppress(OSError) if sys.exc_info()[1] else contextlib.nullcontext():
                _write_summary(run, cfg, strategy, result, status, locals().get("final"))
    final = locals().get("final") or NO_METRICS
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


def _spare_took_over(strategy, *, resume: bool) -> bool:
    """async_ps: a spare worker waits until it takes over a lost worker (True) or the run ends."""
    if resume:
        strategy.barrier()  # where the workers' Checkpointer.resume meets every process
    return strategy.wait_for_slot()


def _strategy_record(run: RunDir, strategy, result: LoopResult, plan) -> None:
    """The strategy's account of the run (a parameter server's counts) in metrics.jsonl."""
    records = strategy.finish_training(samples_per_step=plan.global_batch_size // plan.world_size)
    if not strategy.is_main:
        return
    # a resumed server 0 recalls earlier attempts' worker_lost/worker_rejoined; one that an
    # extended run (resumed after its end) had logged already is kept once
    logged = [record for record in read_jsonl(run.metrics) if "event" in record]
    for record in records:
        line = {"step": result.state.step, **record}
        if line not in logged:
            append_record(run.metrics, line)


def summarize(config: str | Path | dict | Config, *, overrides: list[str] = ()) -> ModelSummary:
    """The config's model summarized (layers, shapes, parameters, size, FLOPs), untrained."""
    cfg = load_config(config, list(overrides))
    bundle, model = _data_and_model(cfg, None, None)  # the data: input shape and outputs
    return summarize_model(model, bundle.spec.input_shape, input_dtype=bundle.spec.input_dtype)


def evaluate(
    run: str | Path | Run,
    *,
    data: tuple | str | Path | None = None,
    split: str = "test",
    checkpoint: str | None = None,
    model: nn.Module | None = None,
) -> dict:
    """The metrics dict (loss, accuracy, ...) of a run's weights on one split or new data.

    Args:
        run: a ``Run`` or its directory.
        data: ``(inputs, targets)`` arrays/tensors, or a labelled file (.csv, .parquet, .npy,
            .npz) read like the training data; without it, ``split`` of the run's own data.
        split: ``train``, ``val`` or ``test`` (when ``data`` is not given).
        checkpoint: ``best``, ``last``, ``80`` or ``step_80``; by default the ``Run``'s model
            as it is, and ``best`` for a directory.
        model: a fresh instance of the user module the run was trained with.

    Example: ``scaletrain.evaluate(run, data=(X_test, y_test))["accuracy"]``
    """
    return evaluate_run(run, data=data, split=split, checkpoint=checkpoint, model=model)


def predict(
    run: str | Path | Run,
    inputs,
    *,
    checkpoint: str | None = None,
    model: nn.Module | None = None,
):
    """Predictions of a run's weights with its saved preprocessing.

    Args:
        run: a ``Run`` or its directory.
        inputs: raw samples (numpy array or tensor: as ``Run.predict``, same type back), or a
            CSV/NPY/NPZ file (or image folder): ``{"pred", "prob", "class_names"}`` back.
        checkpoint: ``best``, ``last``, ``80`` or ``step_80``; by default the ``Run``'s model
            as it is, and ``best`` for a directory.
        model: a fresh instance of the user module the run was trained with.

    Example: ``probabilities = scaletrain.predict("runs/bc", X_new)``
    """
    return predict_run(run, inputs, checkpoint=checkpoint, model=model)


def generate(
    run: str | Path | Run,
    prompt: str,
    *,
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    checkpoint: str | None = None,
    model: nn.Module | None = None,
) -> str:
    """A language-model run's continuation of ``prompt`` (the prompt included), as
    ``Run.generate``; ``checkpoint`` and ``model`` as in ``evaluate``.

    Example: ``print(scaletrain.generate("runs/gpt-stdlib", "def ", max_new_tokens=50, seed=0))``
    """
    return run_handle(run, checkpoint=checkpoint, model=model).generate(
        prompt,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
    )


def load_run(
    run_dir: str | Path, *, model: nn.Module | None = None, checkpoint: str | None = None
) -> Run:
    """A run from its directory, its weights loaded (no training, no pickle).

    Args:
        run_dir: the run directory.
        model: a fresh instance of your module, for a run trained with one (its weights are
            loaded into it); built-in models are rebuilt from the config without it.
        checkpoint: ``best`` (default), ``last``, ``80``, ``step_80`` or ``step_00000080``;
            left out on a quantized run (``scaletrain compress --quantize``): its quantized
            model, else its float weights.

    Example: ``run = scaletrain.load_run("runs/bc", model=MyNet()); run.predict(X)``
    """
    return load_run_dir(run_dir, model=model, checkpoint=checkpoint)


def export(
    run_dir: str | Path,
    *,
    out: str | Path | None = None,
    checkpoint: str | None = None,
    format: str = "safetensors",
    opset: int = 18,
    model: nn.Module | None = None,
) -> Path:
    """A run's weights for use elsewhere, never pickle.

    Args:
        run_dir: the run directory.
        out: the file to write (default ``RUN_DIR/model.safetensors`` or ``model.onnx``).
        checkpoint: ``best`` (default), ``last``, ``80`` or ``step_80``; left out on a
            quantized run: its quantized model (docs/compress.md, Export).
        format: ``safetensors`` (weights, config and preprocessing: ``load_exported``) or
            ``onnx`` (opset >= 17, dynamic batch, the scaling in the graph; checked against
            PyTorch with onnxruntime, figures in ``export.json`` beside it).
        opset: the ONNX opset.
        model: a fresh instance of the user module the run was trained with (ONNX only).

    Example: ``scaletrain.export("runs/bc", format="onnx")``
    """
    from scaletrain.trained.exported import export_run_safetensors
    from scaletrain.trained.onnx_run import export_run_onnx

    if format == "onnx":
        result = export_run_onnx(run_dir, out=out, checkpoint=checkpoint, opset=opset, model=model)
        return Path(result["path"])
    if format != "safetensors":
        raise UserError(f"format: expected safetensors or onnx, got {format!r}")
    return export_run_safetensors(run_dir, out=out, checkpoint=checkpoint)


def load_exported(path: str | Path, *, model: nn.Module | None = None) -> Run:
    """A predicting ``Run`` from an exported ``model.safetensors`` alone (no run directory,
    no pickle): ``scaletrain.load_exported("model.safetensors").predict(X)``."""
    from scaletrain.trained.exported import load_exported as load

    return load(path, model=model)


# --- helpers ------------------------------------------------------------------------------
def _refuse_ensemble(cfg: Config) -> None:
    """This module trains one run; `scaletrain.train`/`resume` (ensemble/dispatch.py) also
    train ensembles, which sit above it."""
    if cfg.ensemble is not None:
        raise ConfigError(
            "ensemble: scaletrain.api trains one model; train or resume an ensemble with "
            "scaletrain.train / scaletrain.resume (or `scaletrain train CONFIG`)"
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


def _write_summary(
    run: RunDir, cfg: Config, strategy, result, status: str, final: FinalMetrics | None
) -> None:
    state = result.state if result else None
    final = final or NO_METRICS
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
        "comm_bytes_per_step": strategy.comm_bytes_per_step,  # docs/distributed.md
        "overhead_fraction": result.overhead_fraction if result else None,
        "compile_s": result.compile_s if result else None,
        "counters": state.counters if state else {},
        "stop_signal": result.stop_signal if result else None,
    }
    spec_file = run.root / "data_spec.json"
    if spec_file.is_file():
        spec = read_json(spec_file)
        summary["task"], summary["class_names"] = spec["task"], spec["class_names"]
        if spec["task"] == "language_model" and summary["train_samples_per_s"]:
            tokens = summary["train_samples_per_s"] * spec["input_shape"][0]
            summary["train_tokens_per_s"] = tokens
    atomic_write_json(run.summary, summary)


def _spec_to_dict(spec: DataSpec) -> dict:
    data = dataclasses.asdict(spec)
    data["input_dtype"] = str(spec.input_dtype).removeprefix("torch.")
    data["input_shape"] = list(spec.input_shape)
    return data


def _replace(cfg: Config, **sections) -> Config:
    return Config.model_validate(
        {**cfg.to_dict(), **{k: v.model_dump() for k, v in sections.items()}}
    )
