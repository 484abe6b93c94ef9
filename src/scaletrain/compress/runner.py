"""`scaletrain compress`: prune and/or quantize a trained run into a new run directory, and
measure both models the same way (parameters, bytes on disk, CPU latency, test metric)."""

from __future__ import annotations

import copy
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from scaletrain.compress.measure import (
    Measurement,
    count_parameters,
    latency_ms,
    safetensors_bytes,
)
from scaletrain.compress.newrun import (
    check_target,
    discard,
    finetune,
    publish,
    run_config,
    staging_dir,
    write_direct,
    write_summary,
)
from scaletrain.compress.options import CompressOptions, check_options, default_out
from scaletrain.compress.prune import (
    KeepMasks,
    cubic_schedule,
    parse_targets,
    prune_unstructured,
    sparsity_of,
)
from scaletrain.compress.quantize import prepare_qat, quantize, quantized_state
from scaletrain.compress.shrink import (
    channel_fraction,
    check_shrinkable,
    copy_kept,
    shrunk_config,
)
from scaletrain.compress.user_module import check_user_module
from scaletrain.config import Config, load_run_config
from scaletrain.data import build_data
from scaletrain.errors import UserError
from scaletrain.fileio import atomic_write_json
from scaletrain.finish import wait_for_reports
from scaletrain.rundir import RunDir, is_ensemble_dir, open_run_dir
from scaletrain.trained import Run, load_run_dir
from scaletrain.trained.inference import evaluate_on
from scaletrain.trained.quantized import COMPRESS_FILE, WEIGHTS_FILE, stored_once
from scaletrain.trained.weights import build_run_model

# a single-process checkpoint read: the same filter as scaletrain.api
warnings.filterwarnings("ignore", message="torch.distributed is disabled")


@dataclass(frozen=True)
class CompressResult:
    run_dir: Path
    before: Measurement
    after: Measurement
    metric: str  # e.g. "test accuracy"
    sparsity: float | None  # achieved: zeros among prunable weights, or neurons removed
    model: nn.Module  # the compressed model (quantized where asked)


@dataclass
class _Work:
    """The model as it is being compressed, and the staging directories made so far."""

    model: nn.Module
    model_cfg: object
    cfg: Config  # the latest round's (what the new run's config.yaml records)
    rounds: list[Path]
    spec: object
    masks: dict | None = None
    source_cfg: Config | None = None  # every fine-tuning round starts from the source's config


def compress(
    run_dir: str | Path,
    options: CompressOptions | None = None,
    *,
    out: str | Path | None = None,
    model: nn.Module | None = None,
    **flags,
) -> CompressResult:
    """Prune and/or quantize a trained run into a new run directory; the source is only read.

    Args:
        run_dir: the trained run (a built-in model).
        options: what to do; or pass its fields as keywords (``prune=0.5, structured=True``).
        out: the new run directory (default: ``<run_dir>-compressed``).
        model: a fresh instance of the user module the run was trained with (its weights are
            loaded into it); quantization and unstructured pruning, without fine-tuning.

    Example: ``compress("runs/digits-cnn", prune=0.5, finetune_epochs=2).after.metric``
    """
    if options is not None and flags:
        raise UserError(f"compress: pass options or keywords, not both (got {sorted(flags)})")
    options = options or CompressOptions(**flags)
    check_options(options)
    wait_for_reports(raise_errors=False)  # a report drawn in the background skews latency
    source_dir = open_run_dir(run_dir)
    _check_source_config(source_dir, model, options)
    target = Path(out) if out is not None else default_out(source_dir.root)
    check_target(target, overwrite=options.overwrite)
    source = load_run_dir(source_dir.root, model=model, checkpoint=options.checkpoint)
    _check_source(source, options, target=target)
    bundle = build_data(source.config.data, seed=source.config.run.seed)
    before = _measure(source.model, source, bundle, options)
    work = _Work(copy.deepcopy(source.model), source.config.model, source.config, [], source.spec)
    work.source_cfg = source.config
    try:
        sparsity = _prune(work, target, options)
        if options.quantize == "qat":
            prepare_qat(work.model)
            _finetune_round(work, target, options)
        elif options.finetune_epochs and not options.prune:
            _finetune_round(work, target, options)
        if not work.rounds:  # nothing trained: write the directory directly
            _write_direct_round(work, target, source)
        return _finish(work, target, source, bundle, before, sparsity, options)
    finally:
        discard(*work.rounds)


def _check_source_config(source: RunDir, model: nn.Module | None, options) -> None:
    if is_ensemble_dir(source.root):
        raise UserError(f"{source.root} is an ensemble; compress one of its members/m<i> runs")
    check_user_module(load_run_config(source.config), model, options, where=str(source.root))


def _check_source(source: Run, options: CompressOptions, *, target: Path) -> None:
    """What the source or the smaller model's config cannot do, before anything is measured."""
    if source.config.data.source == "tensors":
        raise UserError(
            f"{source.run_dir} was trained on in-memory data, which the run directory does "
            "not keep; compress needs its data to measure (and fine-tune) the model"
        )
    if options.structured:
        check_shrinkable(source.config.model)
        for fraction in _fractions(options):  # e.g. a width that parallel.dims.tp divides
            run_config(source.config, shrunk_config(source.config.model, fraction), root=target)


def _fractions(options: CompressOptions) -> list[float]:
    """The pruning fraction of each round."""
    if options.schedule == "gradual":
        return cubic_schedule(options.prune, options.steps)
    return [options.prune]


def _prune(work: _Work, target: Path, options: CompressOptions) -> float | None:
    if not options.prune:
        return None
    original_cfg, targets = work.model_cfg, parse_targets(options.targets)
    steps = _fractions(options)
    for fraction in steps:
        if options.structured:
            work.model_cfg = shrunk_config(original_cfg, fraction)
            cfg = work.cfg.model_copy(update={"model": work.model_cfg})
            smaller = build_run_model(cfg, work.spec)
            copy_kept(work.model.cpu(), smaller)
            work.model = smaller
        else:
            work.masks = prune_unstructured(
                work.model.cpu(), fraction, scope=options.scope, targets=targets
            )
        if options.finetune_epochs and not (options.quantize == "qat" and fraction == steps[-1]):
            _finetune_round(work, target, options)
    if options.structured:
        return channel_fraction(original_cfg, work.model_cfg)
    return sparsity_of(work.model, targets)


def _finetune_round(work: _Work, target: Path, options: CompressOptions) -> None:
    root = staging_dir(target, len(work.rounds))
    discard(root)  # a crashed earlier attempt's leftovers
    # From the source's config, not the previous round's: that one's lr is already a tenth,
    # and a gradual schedule's rounds would each divide it again (3e-3 -> 3e-6 by round 3).
    cfg = run_config(
        work.source_cfg,
        work.model_cfg,
        root=root,
        overrides=options.overrides,
        epochs=options.finetune_epochs,
    )
    work.rounds.append(root)
    callbacks = [KeepMasks(work.masks)] if work.masks else []
    work.model = finetune(work.model, cfg, root=root, callbacks=callbacks).cpu()
    if len(work.rounds) > 1:
        discard(work.rounds[-2])
    work.cfg = cfg


def _write_direct_round(work: _Work, target: Path, source: Run) -> None:
    root = staging_dir(target, 0)
    discard(root)
    work.rounds.append(root)
    work.cfg = run_config(work.cfg, work.model_cfg, root=root)
    write_direct(root, work.cfg, work.model, source=open_run_dir(source.run_dir), step=source.steps)


def _finish(work, target, source, bundle, before, sparsity, options) -> CompressResult:
    root = work.rounds[-1]
    float_model = work.model.eval()
    nonzero, total = count_parameters(float_model)
    if options.quantize is not None:
        model = quantize(copy.deepcopy(float_model), options.quantize)
        tensors, quantized = quantized_state(model)
    else:
        model, quantized = float_model, []
        tensors = stored_once(model.state_dict())
    save_file(tensors, str(root / WEIGHTS_FILE))
    disk = (root / WEIGHTS_FILE).stat().st_size
    after = _measure(model, source, bundle, options, disk=disk, counts=(nonzero, total))
    if options.finetune_epochs == 0:
        metrics = {"test": {"loss": None, _metric_key(source): after.metric}}
        write_summary(
            root, task=source.spec.task, metrics=metrics, step=source.steps, status="compressed"
        )
    result = CompressResult(target, before, after, _metric_name(source, bundle), sparsity, model)
    atomic_write_json(root / COMPRESS_FILE, _record(result, source, options, quantized))
    final_cfg = run_config(work.cfg, work.model_cfg, root=target)
    publish(root, target, final_cfg, overwrite=options.overwrite)
    work.rounds.remove(root)
    return result


def _measure(model, source: Run, bundle, options, *, disk=None, counts=None) -> Measurement:
    nonzero, total = counts or count_parameters(model)
    if disk is None:
        disk = safetensors_bytes(dict(model.state_dict()))
    latency = latency_ms(
        model,
        tuple(source.spec.input_shape),
        dtype=source.spec.input_dtype,
        repeats=options.latency_repeats,
    )
    return Measurement(nonzero, total, disk, latency, _evaluate(model, source, bundle))


def _evaluate(model: nn.Module, source: Run, bundle) -> float:
    """The monitored metric on the test split (else val), in float32 for a fair comparison."""
    split = bundle.test if bundle.test is not None else bundle.val
    train = source.config.train.model_copy(update={"precision": "32"})
    cfg = source.config.model_copy(update={"train": train})
    metrics = evaluate_on(
        model, split, cfg=cfg, spec=bundle.spec, inverse_target=bundle.preprocessor.inverse_target
    )
    return float(
        metrics[_metric_key(source)] if _metric_key(source) in metrics else metrics["loss"]
    )


def _metric_key(source: Run) -> str:
    return source.config.train.monitor.metric.split(".", 1)[-1]


def _metric_name(source: Run, bundle) -> str:
    return f"{'test' if bundle.test is not None else 'val'} {_metric_key(source)}"


def _record(result: CompressResult, source: Run, options, quantized: list[str]) -> dict:
    return {
        "source": str(source.run_dir),
        "source_weights": source.weights,
        "options": asdict(options),
        "quantized": quantized,
        "sparsity": result.sparsity,
        "metric": result.metric,
        "before": asdict(result.before),
        "after": asdict(result.after),
    }
