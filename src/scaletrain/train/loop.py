"""The training loop, top to bottom: setup, then step after step until the plan is done."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from scaletrain.config import Config
from scaletrain.data import BatchLoader, DataBundle
from scaletrain.metrics import MetricsLogger, current_rss_mb
from scaletrain.optim import (
    build_loss,
    build_optimizer,
    build_penalty,
    build_schedule,
    clip_gradients,
    gradient_sum,
)
from scaletrain.parallel import optimizer_states_per_param
from scaletrain.rundir import RunDir, atomic_write_json
from scaletrain.train.callbacks import CallbackList
from scaletrain.train.checkpointing import Checkpointer, config_hash
from scaletrain.train.evaluate import EvalResult, evaluate_split
from scaletrain.train.guards import StepGuard, on_bad_step, pass_over
from scaletrain.train.heartbeat import Heartbeat
from scaletrain.train.ledger import LEDGER, Ledger, batch_span
from scaletrain.train.mfu import mfu, peak_flops, train_flops_per_sample
from scaletrain.train.monitor import Monitor
from scaletrain.train.plan import Plan, make_plan
from scaletrain.train.precision import Precision
from scaletrain.train.progress import Progress
from scaletrain.train.signals import StopRequest
from scaletrain.train.speed import (
    FirstStepClock,
    apply_num_threads,
    block_types_of,
    compile_regions,
    wants_channels_last,
)
from scaletrain.train.state import TrainState

OOM_BACKOFF_STEPS = 3  # train.micro_batch_size auto: an out-of-memory error this early halves it


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
    mfu: float | None = None
    stop_signal: int | None = None
    overhead_fraction: float | None = None
    compile_s: float | None = None  # first step, compilation included


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
    if (
        torch.are_deterministic_algorithms_enabled() != cfg.train.deterministic
        or torch.is_deterministic_algorithms_warn_only_enabled()
    ):  # only on a change: the call imports torch._inductor's config (0.6-1.7 s here)
        torch.use_deterministic_algorithms(cfg.train.deterministic, warn_only=False)
    plan = make_plan(
        cfg.train,
        world_size=strategy.world_size,
        num_train_samples=len(data.train),
        drop_last=cfg.data.drop_last,
    )
    if strategy.is_main:
        _write_plan(run, plan, precision, strategy)
    apply_num_threads(cfg.train.num_threads)  # before the peak FLOP/s (keyed by threads)
    flops_per_sample = train_flops_per_sample(model, data.spec.input_shape, data.spec.input_dtype)
    peak = peak_flops(strategy.device, precision.compute_dtype) if flops_per_sample else None
    first_step = FirstStepClock(model) if cfg.train.compile else None
    block_types = block_types_of(cfg.model, model)
    channels_last = wants_channels_last(
        cfg.train.channels_last, model, device=strategy.device, world_size=strategy.world_size
    )
    if channels_last:  # NHWC convolution weights; each image batch is converted to match
        model = model.to(memory_format=torch.channels_last)
    if cfg.train.compile:  # per block, before wrapping (as torchtitan): one graph per block type
        compile_regions(model, block_types)
    model = strategy.wrap_model(
        model.to(dtype=precision.param_dtype),
        precision=precision,  # FSDP: MixedPrecisionPolicy from autocast's dtype
        block_types=block_types,  # the registry's blocks: FSDP units, checkpointed blocks
        # one micro batch's shape: the planner measures activations on the meta device
        example_input=torch.empty(
            (plan.micro_batch_size, *data.spec.input_shape),
            dtype=data.spec.input_dtype,
            device="meta",
        ),
        optimizer_states_per_param=optimizer_states_per_param(
            cfg.optim.name, momentum=cfg.optim.momentum
        ),
    )
    optimizer = build_optimizer(cfg.optim, model)
    trainable = [param for param in model.parameters() if param.requires_grad]  # walked once
    schedule = build_schedule(cfg.optim.schedule, optimizer, total_steps=plan.total_steps)
    penalty = build_penalty(cfg.optim.penalty, model)
    loss_fn = build_loss(
        cfg.loss,
        task=data.spec.task,
        num_outputs=data.spec.num_outputs,
        class_counts=data.spec.class_counts,
    ).to(strategy.device)

    def build_loader(micro_batch_size: int) -> BatchLoader:
        return BatchLoader(
            data.train,
            global_batch_size=plan.global_batch_size,
            micro_batch_size=micro_batch_size,
            shuffle=True,
            seed=cfg.run.seed,
            drop_last=cfg.data.drop_last,
            rank=strategy.rank,
            world_size=strategy.world_size,
            device=strategy.device,
            num_workers=cfg.data.num_workers,
        )

    loader = build_loader(plan.micro_batch_size)
    state = TrainState(model, optimizer, schedule, loader, scaler=precision.scaler)
    guard = StepGuard(cfg.train.guard, strategy=strategy, log_every_steps=cfg.log.every_steps)
    ledger = Ledger(run.root / LEDGER, enabled=strategy.is_main)
    saver = Checkpointer(
        cfg.checkpoint,
        run=run,
        state=state,
        strategy=strategy,
        guard=guard,
        ledger=ledger,
        config_hash=config_hash(cfg),  # a resume warns if the training math was changed
    )
    monitor = Monitor(cfg.train.monitor, cfg.train.early_stopping, state)
    if resume:
        saver.resume()  # before the logger opens metrics.jsonl
    heartbeat = Heartbeat(
        run.root / "heartbeat",
        rank=strategy.rank,
        world_size=strategy.world_size,
        timeout_s=cfg.parallel.timeout_s,
    )
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
        state.pending_steps = window_steps  # the partial log window survives a resume
        path, stall_s = saver.save(pending_loss=float(window_loss()))
        if best:
            saver.mark_best(metric=monitor.name)
        detail = f"{reason}: {path.name}"
        log({"event": "checkpoint", "step": state.step, "detail": detail, "stall_s": stall_s})

    # --- loop --------------------------------------------------------------------------
    world = strategy.world_size
    progress = Progress(plan.total_steps, enabled=cfg.log.progress and strategy.is_main)

    def pending() -> torch.Tensor:  # the loss of a resumed (or rolled back) log window
        return torch.full((), state.pending_loss, device=strategy.device)

    window_losses = [pending()]  # this log window's step losses (the last is the step's)

    def window_loss() -> torch.Tensor:  # their sum on this rank
        if not window_losses:
            return torch.zeros((), device=strategy.device)
        return torch.stack(window_losses).sum()

    # the gradient norm: every step where clipping needs it, else at log steps; the guard
    # reads it where it was computed, else a cheaper finiteness probe (a sum)
    clipping = cfg.optim.clip.mode != "none"
    guarding = cfg.train.guard.nonfinite != "off" and precision.scaler is None
    grad_norm = grad_check = torch.zeros(())
    empty_batch = (
        torch.zeros((0, *data.spec.input_shape), dtype=data.spec.input_dtype).to(strategy.device),
        torch.zeros((0,), dtype=torch.long, device=strategy.device),
    )
    window_samples, window_start, train_seconds, samples_seen = 0, time.perf_counter(), 0.0, 0
    compute_seconds = 0.0  # forward/backward/optimizer only: the rest is overhead
    status = "finished"
    stop = StopRequest()
    window_steps = state.pending_steps  # steps whose loss is in window_losses
    # auto micro batch: one process only (ranks would have to agree before a collective)
    auto_micro = cfg.train.micro_batch_size == "auto" and world == 1
    backoff_until = state.step + OOM_BACKOFF_STEPS if auto_micro else -1
    model.train()  # and again only after evaluation switched it off
    callbacks.on_train_start(state)
    try:
        stop.__enter__()
        while state.step < plan.total_steps and status == "finished":
            for batch in loader:
                span = batch_span(loader, batch)
                if span in state.skip_spans:  # it made a rollback necessary: never train on it
                    pass_over(state, ledger, span)
                    continue
                if not model.training:  # evaluation ran (the call walks every submodule)
                    model.train()
                compute_start = time.perf_counter()
                # a rank whose share of a short last step is empty still joins the collectives
                micro_batches = batch.micro_batches or [empty_batch]
                step_loss = None
                # forward / backward over this rank's micro batches; only the last syncs grads
                try:
                    for index, (inputs, targets) in enumerate(micro_batches):
                        last = index == len(micro_batches) - 1
                        if channels_last and inputs.dim() == 4:
                            inputs = inputs.contiguous(memory_format=torch.channels_last)
                        if precision.param_dtype != torch.float32 and inputs.is_floating_point():
                            inputs = inputs.to(precision.param_dtype)  # bf16-true: no autocast
                        with strategy.no_sync(model, enabled=not last), precision.autocast():
                            if len(targets):
                                loss = loss_fn(model(inputs), targets)
                            else:  # zero gradients, so DDP/FSDP's reductions see every rank
                                loss = model(inputs).float().sum() * 0.0
                            # mean over the micro batch -> share of the global step's mean loss
                            share = len(targets) * world / batch.num_samples_global
                            scaled = loss * share if share != 1.0 else loss
                            if penalty is not None and last:
                                scaled = scaled + penalty()
                        weight = len(targets) / batch.num_samples_global
                        part = loss.detach() if weight == 1.0 else loss.detach() * weight
                        step_loss = part if step_loss is None else step_loss + part
                        (precision.scaler.scale(scaled) if precision.scaler else scaled).backward()
                except torch.OutOfMemoryError:
                    if state.step >= backoff_until or plan.micro_batch_size == 1:
                        raise
                    # same global batch, smaller micro batches: redo this step from its start
                    loss = scaled = None  # drop the graph before trying again
                    optimizer.zero_grad(set_to_none=True)
                    plan = _halve_micro_batch(plan)
                    loader = state.loader = _rewind(build_loader(plan.micro_batch_size), span)
                    if strategy.is_main:
                        _write_plan(run, plan, precision, strategy)
                    detail = (
                        f"out of memory: micro batch {plan.micro_batch_size} x "
                        f"{plan.grad_accum_steps} accumulation steps from now on"
                    )
                    log({"event": "oom_backoff", "step": state.step + 1, "detail": detail})
                    break
                if precision.scaler is not None:
                    precision.scaler.unscale_(optimizer)
                # this update logs every log.every_steps and at the end
                update = state.step + 1
                at_log_step = update % cfg.log.every_steps == 0 or update == plan.total_steps
                if clipping or at_log_step:
                    grad_norm = grad_check = clip_gradients(cfg.optim.clip, trainable)
                elif guarding:
                    grad_check = gradient_sum(trainable)
                # one fused all-reduce: non-finite/spike on any rank, SIGTERM anywhere, time to save
                verdict = guard.check(
                    state.step + 1,
                    loss=step_loss,
                    grad_norm=None if precision.scaler else grad_check,  # the scaler skips infs
                    stop_requested=stop.requested,
                    save_due=saver.due_by_time(),
                    span=span,
                )
                if verdict.bad and on_bad_step(
                    verdict, state.step + 1, guard, saver, checkpoint, log
                ):
                    window_losses = [pending()]  # rolled back: replay from there
                    window_steps = state.pending_steps
                    break
                if not verdict.bad:
                    if precision.scaler is not None:
                        precision.scaler.step(optimizer)
                        precision.scaler.update()
                    else:
                        optimizer.step()
                    window_losses.append(step_loss)  # summed at the log step: no op here
                    window_steps += 1
                if (
                    logger
                    and cfg.log.histograms_every
                    and (state.step + 1) % cfg.log.histograms_every == 0
                ):
                    logger.log_histograms(model, state.step + 1)  # before grads are dropped
                optimizer.zero_grad(set_to_none=True)
                schedule.step()
                compute_seconds += time.perf_counter() - compute_start  # async on CUDA: approx.
                state.step += 1
                ledger.record(state.step, span, skipped=verdict.reason)
                window_samples += batch.num_samples_global
                if verdict.interrupt:
                    status = "interrupted"  # every rank stops after the same step
                samples_seen += batch.num_samples_global

                # a window of skipped steps only is carried over to the next log step
                if at_log_step and window_steps:
                    ledger.flush()
                    loss_value = strategy.all_reduce_sum(window_loss()).item() / window_steps
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
                        "mfu": mfu(window_samples / elapsed / world, flops_per_sample, peak),
                        "rss_mb": current_rss_mb(),
                    }
                    log(record)
                    progress.update(state.step, record)
                    callbacks.on_log(state, record)
                    window_losses = []
                    window_samples, window_start, window_steps = 0, time.perf_counter(), 0
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
                elif verdict.save_due:
                    checkpoint("every_minutes")
                window_start += time.perf_counter() - paused
                heartbeat.beat(state.step)  # hang diagnosis: this rank finished the step
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
        elif status == "interrupted":
            checkpoint(f"interrupted by signal {stop.signum}")
        saver.finish()  # a background save commits (or raises) before the run ends
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, keep the last committed checkpoint
        status = "interrupted"
    except Exception as error:
        heartbeat.failed(state.step, error)  # a collective timed out? name the stalled rank
        raise
    finally:
        heartbeat.stop()
        saver.drain()
        ledger.flush()
        stop.__exit__()
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
        stop_signal=stop.signum,
        mfu=mfu(samples_seen / max(train_seconds, 1e-9) / world, flops_per_sample, peak),
        overhead_fraction=max(0.0, 1 - compute_seconds / train_seconds) if train_seconds else None,
        compile_s=first_step.seconds if first_step else None,
    )


def _halve_micro_batch(plan: Plan) -> Plan:
    micro = max(1, plan.micro_batch_size // 2)
    per_rank = plan.global_batch_size // plan.world_size
    return dataclasses.replace(
        plan, micro_batch_size=micro, grad_accum_steps=math.ceil(per_rank / micro)
    )


def _rewind(loader: BatchLoader, span: list[int]) -> BatchLoader:
    """Position `loader` at the start of the step `span` ([epoch, start, stop])."""
    loader.load_state_dict({"epoch": span[0], "samples_consumed": span[1]})
    return loader


def _write_plan(run: RunDir, plan: Plan, precision: Precision, strategy) -> None:
    extra = {"precision": precision.name, "device": str(strategy.device)}
    atomic_write_json(run.plan, {**plan.to_dict(), **extra})


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
