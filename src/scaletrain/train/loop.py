"""The training loop, top to bottom: setup, then step after step until the plan is done."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from scaletrain.checkpoint import CheckpointStore
from scaletrain.config import Config
from scaletrain.data import BatchLoader, DataBundle
from scaletrain.errors import CheckpointError
from scaletrain.metrics import MetricsLogger, current_rss_mb
from scaletrain.optim import (
    build_loss,
    build_optimizer,
    build_penalty,
    build_schedule,
    clip_gradients,
)
from scaletrain.rundir import RunDir, append_record, atomic_write_json, truncate_metrics
from scaletrain.train.callbacks import CallbackList
from scaletrain.train.evaluate import EvalResult, evaluate_split
from scaletrain.train.monitor import Monitor
from scaletrain.train.plan import Plan, make_plan
from scaletrain.train.precision import Precision
from scaletrain.train.progress import Progress
from scaletrain.train.state import TrainState


@dataclass
class LoopResult:
    status: str  # finished | stopped_early | interrupted
    state: TrainState
    plan: Plan
    precision: Precision
    loss_fn: nn.Module
    wall_s: float
    train_seconds: float
    samples_seen: int


def run_loop(  # noqa: C901 -- the loop is one function by design (docs/architecture.md)
    cfg: Config,
    *,
    model: nn.Module,
    data: DataBundle,
    run: RunDir,
    strategy,
    resume: bool = False,
    callbacks: CallbackList | None = None,
) -> LoopResult:
    """Train `model` on `data` as `cfg` says; resume from the run's last checkpoint if asked."""
    # --- setup -------------------------------------------------------------------------
    started = time.perf_counter()
    callbacks = callbacks or CallbackList([])
    precision = Precision.from_config(cfg.train.precision, strategy.device)
    plan = make_plan(
        cfg.train,
        world_size=strategy.world_size,
        num_train_samples=len(data.train),
        drop_last=cfg.data.drop_last,
    )
    if strategy.is_main:
        atomic_write_json(
            run.plan,
            {**plan.to_dict(), "precision": precision.name, "device": str(strategy.device)},
        )
    model = strategy.wrap_model(model.to(dtype=precision.param_dtype))
    if cfg.train.compile:
        model = torch.compile(model)
    optimizer = build_optimizer(cfg.optim, model)
    schedule = build_schedule(cfg.optim.schedule, optimizer, total_steps=plan.total_steps)
    penalty = build_penalty(cfg.optim.penalty, model)
    loss_fn = build_loss(
        cfg.loss,
        task=data.spec.task,
        num_outputs=data.spec.num_outputs,
        class_counts=data.spec.class_counts,
    ).to(strategy.device)
    loader = BatchLoader(
        data.train,
        global_batch_size=plan.global_batch_size,
        micro_batch_size=plan.micro_batch_size,
        shuffle=True,
        seed=cfg.run.seed,
        drop_last=cfg.data.drop_last,
        rank=strategy.rank,
        world_size=strategy.world_size,
        device=strategy.device,
        num_workers=cfg.data.num_workers,
    )
    state = TrainState(model, optimizer, schedule, loader, scaler=precision.scaler)
    store = CheckpointStore(run.checkpoints, keep_last=cfg.checkpoint.keep_last)
    monitor = Monitor(cfg.train.monitor, cfg.train.early_stopping, state)
    if resume:
        _restore(state, store, strategy, run)  # before the logger opens metrics.jsonl
    logger = MetricsLogger(run.root, tensorboard=cfg.log.tensorboard) if strategy.is_main else None

    def log(record: dict) -> None:
        if logger is not None:
            logger.log({**record, "time_s": round(time.perf_counter() - started, 4)})

    def evaluate(split_name: str) -> EvalResult | None:
        split = getattr(data, split_name)
        if split is None:
            return None
        result = evaluate_split(
            model,
            split,
            spec=data.spec,
            loss_fn=loss_fn,
            precision=precision,
            strategy=strategy,
            batch_size=max(plan.micro_batch_size, 256),
        )
        log(
            {
                "split": split_name,
                "step": state.step,
                "epoch": state.epoch,
                "loss": result.loss,
                "metrics": result.metrics,
            }
        )
        return result

    def checkpoint(reason: str, *, best: bool = False) -> None:
        state.pending_loss = float(running_loss)  # the partial log window survives a resume
        path = store.save(
            step=state.step,
            tensors=state.tensors(),
            side_state=state.side_state(),
            strategy=strategy,
        )
        if best and strategy.is_main:
            store.mark_best(state.step, metric=monitor.name, value=state.best_value)
        log({"event": "checkpoint", "step": state.step, "detail": f"{reason}: {path.name}"})

    # --- loop --------------------------------------------------------------------------
    world = strategy.world_size
    progress = Progress(plan.total_steps, enabled=cfg.log.progress and strategy.is_main)
    running_loss = torch.full((), state.pending_loss, device=strategy.device)
    window_samples, window_start, train_seconds, samples_seen = 0, time.perf_counter(), 0.0, 0
    status = "finished"
    callbacks.on_train_start(state)
    try:
        while state.step < plan.total_steps and status == "finished":
            for batch in loader:
                model.train()
                # forward / backward over this rank's micro batches; only the last syncs grads
                for index, (inputs, targets) in enumerate(batch.micro_batches):
                    last = index == len(batch.micro_batches) - 1
                    with strategy.no_sync(model, enabled=not last), precision.autocast():
                        loss = loss_fn(model(inputs), targets)
                        # mean over the micro batch -> share of the global step's mean loss
                        share = len(targets) * world / batch.num_samples_global
                        scaled = loss * share if share != 1.0 else loss
                        if penalty is not None and last:
                            scaled = scaled + penalty()
                    running_loss += loss.detach() * (len(targets) / batch.num_samples_global)
                    (precision.scaler.scale(scaled) if precision.scaler else scaled).backward()
                if precision.scaler is not None:
                    precision.scaler.unscale_(optimizer)
                grad_norm = clip_gradients(cfg.optim.clip, model.parameters())
                if precision.scaler is not None:
                    precision.scaler.step(optimizer)
                    precision.scaler.update()
                else:
                    optimizer.step()
                if (
                    logger
                    and cfg.log.histograms_every
                    and (state.step + 1) % cfg.log.histograms_every == 0
                ):
                    logger.log_histograms(model, state.step + 1)  # before grads are dropped
                optimizer.zero_grad(set_to_none=True)
                schedule.step()
                state.step += 1
                window_samples += batch.num_samples_global
                samples_seen += batch.num_samples_global

                # log (the only host sync of a step, and only every log.every_steps)
                if state.step % cfg.log.every_steps == 0 or state.step == plan.total_steps:
                    steps_in_window = (state.step - 1) % cfg.log.every_steps + 1
                    loss_value = (
                        strategy.all_reduce_sum(running_loss).item() / world / steps_in_window
                    )
                    elapsed = time.perf_counter() - window_start
                    train_seconds += elapsed
                    record = {
                        "split": "train",
                        "step": state.step,
                        "epoch": state.epoch,
                        "loss": loss_value,
                        "lr": optimizer.param_groups[0]["lr"],
                        "grad_norm": float(grad_norm),
                        "samples_per_s": window_samples / elapsed,
                        "mfu": None,
                        "rss_mb": current_rss_mb(),
                    }
                    log(record)
                    progress.update(state.step, record)
                    callbacks.on_log(state, record)
                    running_loss.zero_()
                    window_samples, window_start = 0, time.perf_counter()
                    if not math.isfinite(loss_value):
                        status = "failed"
                        raise FloatingPointError(
                            f"training loss became {loss_value} at step {state.step}"
                        )

                # evaluate, early stop, keep the best, checkpoint (not counted in samples/s)
                paused = time.perf_counter()
                if cfg.train.eval_every_steps and state.step % cfg.train.eval_every_steps == 0:
                    status = _evaluate_and_monitor(evaluate, monitor, checkpoint, cfg, log, state)
                if cfg.checkpoint.every_steps and state.step % cfg.checkpoint.every_steps == 0:
                    checkpoint("every_steps")
                window_start += time.perf_counter() - paused
                callbacks.on_step_end(state)
                if state.step >= plan.total_steps or status != "finished":
                    break
            else:  # the epoch ran to its end
                paused = time.perf_counter()
                state.epoch = loader.epoch
                if not cfg.train.eval_every_steps:
                    status = _evaluate_and_monitor(evaluate, monitor, checkpoint, cfg, log, state)
                every = cfg.checkpoint.every_epochs
                if every and state.epoch % every == 0 and state.step < plan.total_steps:
                    checkpoint("every_epochs")
                callbacks.on_epoch_end(state)
                window_start += time.perf_counter() - paused
        if status in ("finished", "stopped_early"):
            checkpoint("final")
    except KeyboardInterrupt:
        status = "interrupted"
        checkpoint("interrupted")
    finally:
        progress.close()
        if logger is not None:
            logger.close()
    callbacks.on_train_end(state)
    return LoopResult(
        status=status,
        state=state,
        plan=plan,
        precision=precision,
        loss_fn=loss_fn,
        wall_s=time.perf_counter() - started,
        train_seconds=train_seconds,
        samples_seen=samples_seen,
    )


def _evaluate_and_monitor(evaluate, monitor: Monitor, checkpoint, cfg: Config, log, state) -> str:
    """Validate, remember the best step (saving it), and say whether to stop early."""
    result = evaluate("val")
    if result is None:
        return "finished"
    improved = monitor.observe(result)
    if improved and cfg.checkpoint.save_best:
        checkpoint("best", best=True)
    if monitor.should_stop():
        log({"event": "early_stop", "step": state.step, "detail": monitor.describe()})
        return "stopped_early"
    return "finished"


def _restore(state: TrainState, store: CheckpointStore, strategy, run: RunDir) -> None:
    """Load the newest valid checkpoint; forget metric lines logged after it."""
    path = store.latest_valid()
    if path is None:
        raise CheckpointError(f"no valid checkpoint to resume from in {store.root}")
    tensors = state.tensors()
    side = store.load(path, tensors=tensors, rank=strategy.rank)
    state.load_tensors(tensors)
    state.load_side_state(side)
    state.counters["restarts"] += 1
    if strategy.is_main:
        truncate_metrics(run.metrics, after_step=state.step)
        append_record(run.metrics, {"event": "resume", "step": state.step, "detail": path.name})
    strategy.barrier()
