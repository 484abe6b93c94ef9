"""Everything the loop calls, built once from the config: the model placed by the strategy,
the optimizer and schedule, the step, and the owners of logging, validation and saving."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from scaletrain.config import Config
from scaletrain.data import BatchLoader, DataBundle, StepBatch
from scaletrain.fileio import atomic_write_json
from scaletrain.metrics import MetricsLogger
from scaletrain.metrics.mfu import peak_flops
from scaletrain.models import block_types_of, train_flops_per_sample
from scaletrain.optim import build_loss, build_optimizer, build_penalty, build_schedule
from scaletrain.optim.params import is_norm_module
from scaletrain.parallel import (
    FirstStepClock,
    WrapRequest,
    compile_regions,
    optimizer_states_per_param,
)
from scaletrain.rundir import RunDir
from scaletrain.train.callbacks import CallbackList
from scaletrain.train.checkpointing import Checkpointer, config_hash
from scaletrain.train.distill import TeacherModel, build_distiller
from scaletrain.train.evaluate import Evaluator
from scaletrain.train.guards import StepGuard
from scaletrain.train.heartbeat import Heartbeat
from scaletrain.train.ledger import LEDGER, Ledger
from scaletrain.train.monitor import Monitor
from scaletrain.train.plan import Plan
from scaletrain.train.precision import Precision, run_precision
from scaletrain.train.process_settings import apply_process_settings
from scaletrain.train.progress import Progress
from scaletrain.train.row_weights import build_row_weighted_loss
from scaletrain.train.state import TrainState
from scaletrain.train.step import MicroBatchBackoff, TrainStep
from scaletrain.train.step_log import TrainLogger
from scaletrain.train.takeover import skip_to
from scaletrain.train.train_metrics import EpochTrainMetrics, build_scorer


@dataclass
class Trainer:
    """The loop's components; `plan` changes only when the OOM back-off halves micro batches."""

    state: TrainState
    train_step: TrainStep
    logger: TrainLogger
    evaluator: Evaluator
    saver: Checkpointer
    guard: StepGuard
    ledger: Ledger
    heartbeat: Heartbeat
    callbacks: CallbackList
    precision: Precision
    loss_fn: nn.Module
    save_best: bool
    first_step: FirstStepClock | None = None
    started: float = field(default_factory=time.perf_counter)

    @property
    def plan(self) -> Plan:
        return self.train_step.backoff.plan

    def steps(self) -> Iterator[StepBatch]:
        """Steps from the loader's position on, epoch after epoch; ask again after the
        loader was repositioned (a rollback, the OOM back-off)."""
        while True:
            yield from self.state.loader

    def save(self, reason: str, *, best: bool = False, background: bool = False) -> None:
        """Checkpoint now (collective), keeping the unlogged part of the log window;
        `background`: the write commits in a thread (`saver.finish` waits for it)."""
        if not self.saver.strategy.writes_checkpoints:  # async_ps: worker 0 saves alone
            return
        loss, steps = self.logger.pending()
        metric = self.evaluator.monitor.name
        if best and self.saver.best is not None:  # a CPU copy now, on disk with the next save
            self.saver.keep_best(pending_loss=loss, pending_steps=steps, metric=metric)
            return
        snapshot = self.saver.take_best()
        if snapshot is not None and snapshot.step != self.state.step:
            best_path, best_s = self.saver.save_snapshot(snapshot, background=background)
            self.logger.event(
                "checkpoint", snapshot.step, f"best: {best_path.name}", stall_s=best_s
            )
        marks_best = best or (snapshot is not None and snapshot.step == self.state.step)
        if marks_best and background:  # named before it exists, as a best snapshot is: the
            self.saver.mark_best(metric=metric)  # final evaluation reads it during the write
        path, stall_s = self.saver.save(
            pending_loss=loss, pending_steps=steps, background=background
        )
        if marks_best and not background:
            self.saver.mark_best(metric=metric)
        if stall_s is None and not best:
            return  # saved at this step already (as the best, or every_steps): said once
        detail = f"{reason}: {path.name}"
        self.logger.event("checkpoint", self.state.step, detail, stall_s=stall_s)

    def close(self, *, keep_save_in_flight: bool = False) -> None:
        """On every way out: let a background save end (unless the caller waits for it:
        `LoopResult.commit_final_save`), flush and close files."""
        self.heartbeat.stop()
        if not keep_save_in_flight:
            self.saver.drain()
        self.ledger.flush()
        self.logger.close()


def build_trainer(
    cfg: Config,
    *,
    model: nn.Module,
    data: DataBundle,
    run: RunDir,
    strategy,
    plan: Plan,
    resume: bool,
    callbacks: CallbackList,
    teacher: TeacherModel | None = None,
) -> Trainer:
    """Place the model, build the optimizer and the owners; load the checkpoint if resuming."""
    spec = data.spec
    precision = run_precision(
        cfg.train.precision,
        strategy.device,
        model=model,
        spec=spec,
        batch_size=cfg.train.batch_size,
    )
    apply_process_settings(cfg.train)  # before the peak FLOP/s (keyed by threads)
    if strategy.is_main:
        write_plan(run, plan, precision, strategy)
    flops_per_sample = train_flops_per_sample(model, spec.input_shape, spec.input_dtype)
    peak = peak_flops(strategy.device, precision.compute_dtype) if flops_per_sample else None
    first_step = FirstStepClock(model) if cfg.train.compile else None
    channels_last = wants_channels_last(
        cfg.train.channels_last, model, device=strategy.device, world_size=strategy.world_size
    )
    model = _place_model(
        cfg,
        model,
        strategy,
        precision=precision,
        plan=plan,
        spec=spec,
        channels_last=channels_last,
    )
    model.train()  # evaluation switches to eval mode and back
    optimizer = build_optimizer(cfg.optim, model)
    strategy.bind_optimizer(optimizer)
    schedule = build_schedule(cfg.optim.schedule, optimizer, total_steps=plan.total_steps)
    loss_fn = build_loss(
        cfg.loss, task=spec.task, num_outputs=spec.num_outputs, class_counts=spec.class_counts
    ).to(strategy.device)
    row_loss = build_row_weighted_loss(  # boosting's sample weights in the loss, or None
        cfg.data.subsample, cfg.loss, task=spec.task, num_rows=len(data.train)
    )
    example_input = torch.zeros((1, *spec.input_shape), dtype=spec.input_dtype)
    distiller = None
    if teacher is not None:  # before the loader: a precomputed teacher is a collective
        distiller = build_distiller(
            cfg.distill,
            teacher,
            task_loss=loss_fn,
            train=data.train,
            example_input=example_input.to(strategy.device),
            run_root=run.root,
            precision=precision,
            strategy=strategy,
        )

    build_loader = functools.partial(
        BatchLoader,
        data.train,
        global_batch_size=plan.global_batch_size,
        shuffle=True,
        seed=cfg.run.seed,
        drop_last=cfg.data.drop_last,
        rank=strategy.data_shard()[0],
        world_size=strategy.data_shard()[1],
        device=strategy.device,
        num_workers=cfg.data.num_workers,
    )  # build_loader(micro_batch_size=...): the OOM back-off builds smaller ones
    guard = StepGuard(cfg.train.guard, strategy=strategy, log_every_steps=cfg.log.every_steps)
    target = data.preprocessor.target  # standardized regression targets: MAE in their units
    scale = target.scale_on(strategy.device) if target is not None else None
    epoch_metrics = EpochTrainMetrics(
        spec.task,
        device=strategy.device,
        num_outputs=spec.num_outputs,
        scorer=(scorer := build_scorer(spec.task, loss_name=cfg.loss.name, target_scale=scale)),
    )
    state = TrainState(
        model,
        optimizer,
        schedule,
        build_loader(micro_batch_size=plan.micro_batch_size),
        scaler=precision.scaler,
        components={"guard": guard, "train_metrics": epoch_metrics},
        replicas=strategy.replicas,
    )
    ledger = Ledger(run.root / LEDGER, enabled=strategy.is_main)
    saver = Checkpointer(
        cfg.checkpoint,
        run=run,
        state=state,
        strategy=strategy,
        guard=guard,
        ledger=ledger,
        config_hash=config_hash(cfg),  # a resume warns if the training math was changed
        total_steps=plan.total_steps,
    )
    monitor = Monitor(cfg.train.monitor, cfg.train.early_stopping, state)
    if resume:
        saver.resume()  # before the logger opens metrics.jsonl (it rewrites the file)
    if strategy.takeover is not None:  # async_ps: a spare continues a lost worker's shard
        skip_to(state, strategy.takeover["step"])
    strategy.bind_state(state)
    logger = TrainLogger(
        cfg.log,
        writer=MetricsLogger(run.root, tensorboard=cfg.log.tensorboard)
        if strategy.is_main
        else None,
        strategy=strategy,
        total_steps=plan.total_steps,
        epoch_metrics=epoch_metrics,
        progress=Progress(
            plan.total_steps,
            steps_per_epoch=plan.steps_per_epoch,
            monitor=cfg.train.monitor.metric,
            enabled=cfg.log.progress and strategy.is_main,
            first_step=state.step,
        ),
        callbacks=callbacks,
        flops_per_sample=flops_per_sample,
        peak_flops=peak,
        tokens_per_sample=spec.input_shape[0] if spec.task == "language_model" else None,
    )
    logger.reset_window(loss=state.pending_loss, steps=state.pending_steps)

    def on_new_plan(new_plan: Plan) -> None:  # the OOM back-off halved the micro batch
        if strategy.is_main:
            write_plan(run, new_plan, precision, strategy)
        detail = (
            f"out of memory: micro batch {new_plan.micro_batch_size} x "
            f"{new_plan.grad_accum_steps} accumulation steps from now on"
        )
        logger.event("oom_backoff", state.step + 1, detail)

    backoff = MicroBatchBackoff(
        plan=plan,
        # one process only: ranks would have to agree before a collective
        enabled=cfg.train.micro_batch_size == "auto" and strategy.world_size == 1,
        build_loader=build_loader,
        on_change=on_new_plan,
        state=state,
    )
    return Trainer(
        state=state,
        train_step=TrainStep(
            model=model,
            optimizer=optimizer,
            schedule=schedule,
            loss_fn=loss_fn,
            distiller=distiller,
            row_loss=row_loss,
            precision=precision,
            strategy=strategy,
            guard=guard,
            penalty=build_penalty(cfg.optim.penalty, model),
            clip=cfg.optim.clip,
            channels_last=channels_last,
            empty_batch=(
                torch.zeros((0, *spec.input_shape), dtype=spec.input_dtype).to(strategy.device),
                torch.zeros((0,), dtype=torch.long, device=strategy.device),
            ),
            keeps_predictions=scorer is not None,
            backoff=backoff,
        ),
        logger=logger,
        evaluator=Evaluator(
            cfg.train.eval_every_steps,
            data=data,
            loss_fn=loss_fn,
            precision=precision,
            strategy=strategy,
            batch_size=max(plan.micro_batch_size, 256),
            monitor=monitor,
            log=logger.log,
        ),
        saver=saver,
        guard=guard,
        ledger=ledger,
        heartbeat=Heartbeat(
            run.root / "heartbeat",
            rank=strategy.rank,
            world_size=strategy.world_size,
            timeout_s=cfg.parallel.timeout_s,
        ),
        callbacks=callbacks,
        precision=precision,
        loss_fn=loss_fn,
        save_best=cfg.checkpoint.save_best,
        first_step=first_step,
    )


def _place_model(
    cfg: Config, model: nn.Module, strategy, *, precision, plan, spec, channels_last: bool
) -> nn.Module:
    """Memory format, regional compile, dtype, then the strategy's wrap (with its plan)."""
    block_types = block_types_of(cfg.model, model)
    if channels_last:  # NHWC convolution weights; each image batch is converted to match
        model = model.to(memory_format=torch.channels_last)
    if cfg.train.compile:  # per block, before wrapping (as torchtitan): one graph per block type
        compile_regions(model, block_types)
    return strategy.wrap_model(
        precision.prepare_model(model),
        WrapRequest(
            compute_dtype=precision.autocast_dtype,  # FSDP: MixedPrecisionPolicy
            block_types=block_types,  # the registry's blocks: FSDP units, checkpointed blocks
            model_name=cfg.model.name,  # the tensor-parallel plan's key
            # one micro batch's shape: the planner measures activations on the meta device
            example_input=torch.empty(
                (plan.micro_batch_size, *spec.input_shape), dtype=spec.input_dtype, device="meta"
            ),
            optimizer_states_per_param=optimizer_states_per_param(
                cfg.optim.name, momentum=cfg.optim.momentum
            ),
            fp32_modules=tuple(module for module in model.modules() if is_norm_module(module)),
        ),
    )


def write_plan(run: RunDir, plan: Plan, precision: Precision, strategy) -> None:
    extra = {"precision": precision.name, "device": str(strategy.device)}
    atomic_write_json(run.plan, {**plan.to_dict(), **extra})


def wants_channels_last(setting: bool | str, model: nn.Module, *, device, world_size: int) -> bool:
    """`train.channels_last`: `auto` is on where it was measured to help (one CPU process
    with 2-D convolutions); FSDP shards and GPU kernels were not measured with it yet."""
    if setting != "auto":
        return bool(setting)
    has_conv = any(isinstance(module, nn.Conv2d) for module in model.modules())
    return has_conv and device.type == "cpu" and world_size == 1
