"""One optimizer step, the seam a new training regime changes: micro batches -> forward under
autocast -> loss -> backward (only the last micro batch syncs) -> reduce -> unscale ->
penalty -> clip -> guard verdict -> update -> lr schedule.

The strategy decides how gradients and parameters travel around the update (`no_sync`,
`reduce_gradients`, `apply_update`); `Precision` owns every dtype decision and the grad
scaler. The out-of-memory back-off of `train.micro_batch_size: auto` wraps the step
(`MicroBatchBackoff`), so the loop only learns that a step must be redone.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from scaletrain.config import ClipConfig
from scaletrain.data import BatchLoader, StepBatch
from scaletrain.optim import Penalty, clip_gradients, gradient_sum
from scaletrain.parallel import full_value, local_value
from scaletrain.train.distill import Distiller
from scaletrain.train.guards import StepGuard, Verdict
from scaletrain.train.plan import Plan, with_micro_batch
from scaletrain.train.precision import Precision

Predictions = list[tuple[torch.Tensor, torch.Tensor]]  # (output, targets) per micro batch


@dataclass(slots=True)
class StepOutput:
    loss: torch.Tensor  # this rank's share of the step's global mean loss (on the device)
    verdict: Verdict
    grad_norm: torch.Tensor | None  # total 2-norm before clipping, where it was computed
    # this rank's detached outputs and targets, scored later in batches (train_metrics.py):
    # a small op costs ~10-15 us in the step's cold caches, a batched one once per hundreds
    predictions: Predictions | None


class TrainStep:
    """Runs one optimizer step on this rank's share of a global batch."""

    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule,
        loss_fn: nn.Module,
        precision: Precision,
        strategy,
        guard: StepGuard,
        distiller: Distiller | None = None,
        row_loss: nn.Module | None = None,
        penalty: Penalty | None,
        clip: ClipConfig,
        channels_last: bool,
        empty_batch: tuple[torch.Tensor, torch.Tensor],
        keeps_predictions: bool,
        backoff: MicroBatchBackoff,
    ):
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.backoff = backoff
        self.loss_fn, self.precision, self.strategy = loss_fn, precision, strategy
        self.distiller = distiller  # distill: the teacher's soft targets join the loss
        self.row_loss = row_loss  # boosting: (output, targets, sample_ids), rows weighted
        self.guard, self.penalty, self.clip = guard, penalty, clip
        self.channels_last, self.empty_batch = channels_last, empty_batch
        self.keeps_predictions = keeps_predictions
        self.trainable = [param for param in model.parameters() if param.requires_grad]
        # decided once, not per step (each Python call is ~1 us of a ~2 ms step here)
        self.checks_gradients = precision.checks_gradients
        self.guarding = guard.cfg.nonfinite != "off" and self.checks_gradients
        self.measures_norm = clip.mode != "none"  # else only at log steps
        self.casts_inputs = precision.param_dtype != torch.float32
        self.update = functools.partial(precision.step, optimizer)
        # the strategy's own forward/backward (a pipeline's schedule), else the loop below
        runner = strategy.step_runner(model, loss_fn=loss_fn, precision=precision)
        assert runner is None or row_loss is None  # config: a pipeline sees no sample ids
        self.forward_backward = runner or self._forward_backward
        self.clip_norm = functools.partial(
            clip_gradients, clip, reduce_norm=strategy.reduce_grad_norm
        )
        self.compute_seconds = 0.0  # forward, backward and update only: the rest is overhead

    def __call__(
        self, batch: StepBatch, *, step: int, log_step: bool, stop_requested: bool,
        save_due: bool, span: list[int],
    ) -> StepOutput | None:  # fmt: skip
        """Update `step` (1-based). `log_step`: measure the gradient norm for the log. None:
        the OOM back-off repositioned the loader at this step's start, to be redone."""
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)  # here, so a redone step starts clean
        try:
            loss, predictions = self.forward_backward(batch)
        except torch.OutOfMemoryError:
            if not self.backoff.recover(step, span):
                raise
            self.optimizer.zero_grad(set_to_none=True)  # the step's graph is gone
            return None
        self.strategy.reduce_gradients(self.model)
        self.strategy.sync_buffers(self.model)  # BatchNorm statistics: rank 0's everywhere
        if self.precision.scaler is not None:
            self.precision.unscale(self.optimizer)
        if self.penalty is not None:
            self.penalty.add_to_gradients()
        # the norm where clipping or the log needs it, which the guard then reads too; else
        # a sum of gradient elements (half the cost), if guarding
        grad_norm = grad_check = None
        if self.measures_norm or log_step:
            grad_norm = grad_check = self.clip_norm(self.trainable)
        elif self.guarding:
            grad_check = gradient_sum(self.trainable)
        # one fused all-reduce: non-finite/spike on any rank, SIGTERM anywhere, time to save
        verdict = self.guard.check(
            step,
            loss=loss,
            grad_norm=grad_check if self.checks_gradients else None,
            stop_requested=stop_requested,
            save_due=save_due,
            span=span,
        )
        if verdict.action == "step":
            self.strategy.apply_update(self.update)
        if verdict.action in ("step", "skip"):  # a rollback reloads the schedule instead
            self.schedule.step()
        self.compute_seconds += time.perf_counter() - started  # async on CUDA: approximate
        return StepOutput(loss, verdict, grad_norm, predictions)

    def _forward_backward(self, batch: StepBatch) -> tuple[torch.Tensor, Predictions | None]:
        """Backward of every micro batch; returns the loss share and the predictions."""
        # a rank whose share of a short last step is empty still joins the collectives
        micro_batches = batch.micro_batches or [self.empty_batch]
        world, total = self.strategy.data_shard()[1], batch.num_samples_global
        step_loss = None
        predictions = [] if self.keeps_predictions else None
        last, offset = len(micro_batches) - 1, 0
        for index, (inputs, targets) in enumerate(micro_batches):
            size = targets.shape[0]
            if self.channels_last and inputs.dim() == 4:  # NHWC, as the model's weights
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            if self.casts_inputs:
                inputs = self.precision.cast_inputs(inputs)
            # tensor parallel: the loss from vocabulary-split logits, in backward too
            with self.strategy.loss_parallel():
                with (
                    self.strategy.no_sync(self.model, enabled=index != last),
                    self.precision.autocast(),
                ):
                    output = self.model(inputs)
                    # no sample: zero gradients, so DDP/FSDP's reductions see every rank
                    if not size:
                        loss = output.float().sum() * 0.0
                    elif self.row_loss is not None:  # this micro batch's train-row ids
                        ids = batch.sample_ids[offset : offset + size]
                        loss = self.row_loss(output, targets, ids)
                    elif self.distiller is None:
                        loss = self.loss_fn(output, targets)
                    else:  # this micro batch's ids: the rows of precomputed teacher logits
                        ids = batch.sample_ids[offset : offset + size]
                        loss = self.distiller(output, targets, inputs=inputs, sample_ids=ids)
                    # mean over the micro batch -> share of the global step's mean loss
                    share = size * world / total
                    scaled = loss * share if share != 1.0 else loss
                self.precision.backward(scaled)
            loss = local_value(loss.detach())  # a replicated DTensor under loss parallel
            weight, offset = size / total, offset + size
            part = loss if weight == 1.0 else loss * weight
            step_loss = part if step_loss is None else step_loss + part
            if predictions is not None and size:
                predictions.append((full_value(output.detach()), targets))
        return step_loss, predictions


OOM_BACKOFF_STEPS = 3  # train.micro_batch_size auto: an out-of-memory error this early halves it


class MicroBatchBackoff:
    """`train.micro_batch_size: auto`: an out-of-memory error in the first steps halves the
    micro batch (same global batch, more accumulation) and repositions the loader at the
    step's start, so the step can be redone."""

    def __init__(
        self,
        *,
        plan: Plan,
        enabled: bool,
        build_loader: Callable[..., BatchLoader],
        on_change: Callable[[Plan], None],
        state,
    ):
        self.plan, self.state = plan, state
        self.build_loader, self.on_change = build_loader, on_change
        # one process only: ranks would have to agree before a collective
        self.until_step = state.step + OOM_BACKOFF_STEPS if enabled else 0

    def recover(self, step: int, span: list[int]) -> bool:
        """After an OOM in update `step`: halve and reposition, or False (not allowed)."""
        if step > self.until_step or self.plan.micro_batch_size == 1:
            return False
        self.plan = with_micro_batch(self.plan, max(1, self.plan.micro_batch_size // 2))
        loader = self.build_loader(micro_batch_size=self.plan.micro_batch_size)
        loader.load_state_dict({"epoch": span[0], "samples_consumed": span[1]})
        self.state.loader = loader
        self.on_change(self.plan)
        return True
