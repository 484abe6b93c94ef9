"""The training loop, top to bottom: build the components, then one optimizer step per turn
until the plan is done; each owner (logger, evaluator, saver) decides when it is due."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from scaletrain.config import Config
from scaletrain.data import DataBundle
from scaletrain.rundir import RunDir
from scaletrain.train.callbacks import CallbackList
from scaletrain.train.checkpointing import Checkpointer
from scaletrain.train.distill import TeacherModel
from scaletrain.train.evaluate import EvalResult
from scaletrain.train.guards import on_bad_step, pass_over
from scaletrain.train.ledger import batch_span
from scaletrain.train.plan import Plan
from scaletrain.train.precision import Precision
from scaletrain.train.setup import Trainer, build_trainer
from scaletrain.train.signals import StopRequest
from scaletrain.train.state import TrainState

STATUS = {None: "finished", "early_stop": "stopped_early", "signal": "interrupted"}


class StopReason:
    """Why training stops; the first reason set is kept (nothing overwrites it)."""

    def __init__(self):
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        self.reason = self.reason or reason


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
    error: Exception | None = None  # why a failed run failed (the caller re-raises it)
    # (step, model weights) of the best checkpoint as written, where one process kept them
    best_in_memory: tuple[int, dict] | None = None
    # step -> the val result of the weights after it (the latest and the best validation),
    # where they are the weights the run ends with or the best checkpoint holds
    validated: dict[int, EvalResult] = field(default_factory=dict)
    # the saver whose final checkpoint is still being written (one process), else None
    final_save: Checkpointer | None = None

    def commit_final_save(self) -> None:
        """Wait for the final checkpoint written in the background; CheckpointError if it
        failed (earlier checkpoints untouched)."""
        saver, self.final_save = self.final_save, None
        if saver is not None:
            saver.finish()

    def drain_final_save(self) -> None:
        """On the way out after an error: let the final checkpoint's write end, no raise."""
        saver, self.final_save = self.final_save, None
        if saver is not None:
            saver.drain()


def run_loop(
    cfg: Config,
    *,
    model: nn.Module,
    data: DataBundle,
    run: RunDir,
    strategy,
    plan: Plan,
    resume: bool = False,
    callbacks: CallbackList | None = None,
    teacher: TeacherModel | None = None,
) -> LoopResult:
    """Train `model` on `data` as `cfg` says; resume from the run's last checkpoint if asked."""
    # --- setup -------------------------------------------------------------------------
    callbacks = callbacks or CallbackList([])
    t = build_trainer(
        cfg,
        model=model,
        data=data,
        run=run,
        strategy=strategy,
        plan=plan,
        resume=resume,
        callbacks=callbacks,
        teacher=teacher,
    )
    state, stop, signals, error = t.state, StopReason(), StopRequest(), None
    final_in_flight = False  # the final checkpoint, committing while the caller evaluates
    callbacks.on_train_start(state)
    # --- loop: one optimizer step per turn ---------------------------------------------
    try:
        with signals:  # SIGTERM/SIGINT only set a flag, read at the next step boundary
            steps, total_steps = t.steps(), t.plan.total_steps
            while state.step < total_steps and stop.reason is None:
                batch = next(steps)
                span = batch_span(state.loader, batch)
                if span in state.skip_spans:  # it made a rollback necessary: never train on it
                    pass_over(state, t.ledger, span)
                    continue
                log_step = t.logger.due(state.step + 1)
                output = t.train_step(
                    batch,
                    span=span,
                    step=state.step + 1,
                    log_step=log_step,
                    stop_requested=signals.requested,
                    save_due=t.saver.due_by_time(),
                )
                if output is None or (output.verdict.bad and _handle_bad_step(t, output)):
                    steps = t.steps()  # the loader was repositioned: redo from there
                    continue
                state.step += 1
                epoch_end = batch.ends_epoch
                state.epoch += epoch_end
                t.ledger.record(state.step, span, skipped=output.verdict.reason)
                t.logger.after_step(state, output, batch.num_samples_global, log_step=log_step)
                if output.verdict.interrupt:
                    stop.set("signal")  # every rank stops after the same step
                _after_update(t, stop, epoch_end=epoch_end, minutes_up=output.verdict.save_due)
                t.heartbeat.beat(state.step)  # hang diagnosis: this rank finished the step
                callbacks.on_step_end(state)
                if epoch_end:
                    callbacks.on_epoch_end(state)
            final_in_flight = _end_training(t, interrupted=stop.reason == "signal", signals=signals)
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, keep the last committed checkpoint
        stop.set("signal")
    except Exception as caught:  # returned with the state, so the summary tells the step
        t.heartbeat.failed(state.step, caught)  # a collective timed out? name the stalled rank
        error = caught
    finally:
        final_in_flight = final_in_flight and error is None
        t.close(keep_save_in_flight=final_in_flight)
    if error is None:
        callbacks.on_train_end(state)
    status = "failed" if error else STATUS[stop.reason]
    return _result(t, status, signals, error, final_save=t.saver if final_in_flight else None)


def _end_training(t: Trainer, *, interrupted: bool, signals: StopRequest) -> bool:
    """The last sync and the final checkpoint; True when that checkpoint is still being
    written: in one process its write overlaps the final evaluation (the caller commits it)."""
    strategy = t.saver.strategy
    if not interrupted:  # local SGD/DiLoCo: the last period syncs (a resume needs none)
        strategy.end_training(t.state.model)
    background = not interrupted and strategy.name == "single"  # no collectives in flight
    t.save(
        f"interrupted by signal {signals.signum}" if interrupted else "final", background=background
    )
    if not background:
        t.saver.finish()  # a background save commits (or raises) before the run ends
    return background


def _handle_bad_step(t: Trainer, output) -> bool:
    """Skip, roll back or stop as train.guard says; True when the state was rolled back."""
    rolled_back = on_bad_step(
        output.verdict, t.state.step + 1, t.guard, t.saver, t.save, t.logger.log
    )
    if rolled_back:  # the restored checkpoint's partial log window
        t.logger.reset_window(loss=t.state.pending_loss, steps=t.state.pending_steps)
    return rolled_back


def _after_update(t: Trainer, stop: StopReason, *, epoch_end: bool, minutes_up: bool) -> None:
    """The epoch's training metrics, validation, then checkpoints, where due (a signal saves
    at the end of the loop instead: no validation and no other checkpoint delay it)."""
    state, signalled = t.state, stop.reason == "signal"
    last = state.step == t.plan.total_steps
    validate = not signalled and t.evaluator.due(state.step, epoch_end=epoch_end, last=last)
    reason = (
        None if signalled else t.saver.due(state.step, epoch_end=epoch_end, minutes_up=minutes_up)
    )
    if not (epoch_end or validate or reason):
        return  # most steps: nothing to time
    paused = time.perf_counter()  # validation and saves are not training time
    if epoch_end:
        t.logger.end_epoch(state)
    if validate:
        validation = t.evaluator.validate(state.model, state)
        t.logger.validated(state, validation)  # the console's validation line
        if validation.improved and t.save_best:
            t.save("best", best=True)
        if validation.stop or _callback_stop(t, validation):
            stop.set("early_stop")
    if reason:
        t.save(reason)
    t.logger.exclude_since(paused)


def _callback_stop(t: Trainer, validation) -> bool:
    """A callback's `on_validation` may stop training (a pruned tune trial); all ranks agree
    through one all-reduce per validation, paid only where a callback listens."""
    if "on_validation" not in t.callbacks.implemented:
        return False
    state, result = t.state, validation.result
    record = {"split": "val", "step": state.step, "epoch": state.epoch}
    wants = bool(
        t.callbacks.on_validation(state, {**record, "loss": result.loss, "metrics": result.metrics})
    )
    strategy = t.saver.strategy
    if strategy.world_size > 1:
        flag = torch.tensor([float(wants)], device=strategy.device)
        wants = strategy.all_reduce_sum(flag).item() > 0
    if wants:
        t.logger.event("callback_stop", state.step, "a callback stopped training")
    return wants


def _result(
    t: Trainer,
    status: str,
    signals: StopRequest,
    error: Exception | None,
    *,
    final_save: Checkpointer | None,
) -> LoopResult:
    logger, seconds = t.logger, t.logger.train_seconds
    compute = t.train_step.compute_seconds
    return LoopResult(
        status=status,
        state=t.state,
        plan=t.plan,
        precision=t.precision,
        loss_fn=t.loss_fn,
        wall_s=time.perf_counter() - t.started,
        train_seconds=seconds,
        samples_seen=logger.samples_seen,
        stop_signal=signals.signum,
        mfu=logger.mfu(logger.samples_seen / max(seconds, 1e-9)),
        overhead_fraction=max(0.0, 1 - compute / seconds) if seconds else None,
        compile_s=t.first_step.seconds if t.first_step else None,
        error=error,
        best_in_memory=t.saver.written_best,
        validated=_validated(t),
        final_save=final_save,
    )


def _validated(t: Trainer) -> dict:
    """The val results the final evaluation may reuse (none where the end of the run changed
    the weights after their validation: a local-SGD sync, a parameter-server pull)."""
    if not t.saver.strategy.validated_weights_are_final:
        return {}
    kept = (t.evaluator.best, t.evaluator.latest)
    return {step: result for step, result in filter(None, kept)}
