"""The training log: step losses gathered in a window and read (one host sync) every
`log.every_steps`, each epoch's training loss and metric, throughput and MFU."""

from __future__ import annotations

import math
import time

import torch

from scaletrain.config import LogConfig
from scaletrain.metrics import MetricsLogger, current_rss_mb
from scaletrain.metrics.mfu import mfu
from scaletrain.train.step import StepOutput
from scaletrain.train.train_metrics import EpochTrainMetrics


class TrainLogger:
    """Owns `metrics.jsonl` (rank 0 writes) and decides when a train record is due."""

    def __init__(
        self,
        cfg: LogConfig,
        *,
        writer: MetricsLogger | None,
        strategy,
        total_steps: int,
        epoch_metrics: EpochTrainMetrics,
        progress,
        callbacks,
        flops_per_sample: int | None,
        peak_flops: float | None,
        tokens_per_sample: int | None = None,
    ):
        self.cfg, self.writer, self.strategy = cfg, writer, strategy
        self.total_steps, self.epoch_metrics = total_steps, epoch_metrics
        self.progress, self.callbacks = progress, callbacks
        self.flops_per_sample, self.peak_flops = flops_per_sample, peak_flops
        self.tokens_per_sample = tokens_per_sample  # language_model: the context length
        self.started = time.perf_counter()
        self.train_seconds, self.samples_seen = 0.0, 0
        self._last_step = 0  # the last update accounted (pauses are charged to it)
        self.reset_window(loss=0.0, steps=0)

    # --- records -----------------------------------------------------------------------
    def log(self, record: dict) -> None:
        if self.writer is not None:
            self.writer.log({**record, "time_s": round(time.perf_counter() - self.started, 4)})

    def event(self, name: str, step: int, detail: str, **extra) -> None:
        self.log({"event": name, "step": step, "detail": detail, **extra})

    # --- the step window ---------------------------------------------------------------
    def due(self, step: int) -> bool:
        """Update `step` logs (every `log.every_steps`, and the last)."""
        return step % self.cfg.every_steps == 0 or step == self.total_steps

    def reset_window(self, *, loss: float, steps: int) -> None:
        """Start a window holding a resumed (or rolled back) partial window's loss sum."""
        self._losses = [torch.full((), loss, device=self.strategy.device)] if steps else []
        self._window_steps, self._window_samples = steps, 0
        self._window_updates = 0  # updates timed in this window, skipped ones included
        self._window_start = time.perf_counter()

    def pending(self) -> tuple[float, int]:
        """(loss sum, steps) of the window not logged yet: a checkpoint keeps them."""
        return float(self._window_loss()), self._window_steps

    def after_step(self, state, output: StepOutput, num_samples: int, *, log_step: bool) -> None:
        """Account one update; write the train record at a log step (`due`)."""
        if not output.verdict.bad:
            self._losses.append(output.loss)  # summed at the log step: no op here
            self._window_steps += 1
            self.epoch_metrics.add(output, num_samples)
        self._window_samples += num_samples
        self._window_updates += 1
        self._last_step = state.step
        self.samples_seen += num_samples
        every = self.cfg.histograms_every
        if self.writer is not None and every and state.step % every == 0:
            self.writer.log_histograms(state.model, state.step)  # the step's gradients
        # a window of skipped steps only is carried over to the next log step
        if log_step and self._window_steps:
            self._write_train_record(state, output)

    def _write_train_record(self, state, output: StepOutput) -> None:
        loss = self.strategy.all_reduce_sum(self._window_loss()).item() / self._window_steps
        elapsed = time.perf_counter() - self._window_start
        self.train_seconds += elapsed
        self.progress.observe_window(self._window_updates, elapsed)
        per_second = self._window_samples / elapsed
        record = {
            "split": "train",
            "step": state.step,
            "epoch": state.epoch,
            "loss": loss,
            "lr": state.optimizer.param_groups[0]["lr"],
            "grad_norm": float(output.grad_norm),
            "samples_per_s": per_second,
            **self._tokens_per_s(per_second),
            "mfu": self.mfu(per_second),
            "rss_mb": current_rss_mb(),
        }
        if self.strategy.comm_bytes_per_step is not None:
            record["comm_bytes_per_step"] = self.strategy.comm_bytes_per_step
        self.log(record)
        self.progress.update(state.step, record)
        self.callbacks.on_log(state, record)
        self.reset_window(loss=0.0, steps=0)
        if not math.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss} at step {state.step}")

    def end_epoch(self, state) -> None:
        """The epoch's training loss and metric, beside validation (one collective)."""
        summary = self.epoch_metrics.compute(self.strategy)
        if summary is not None:
            record = {"split": "train_epoch", "step": state.step, "epoch": state.epoch, **summary}
            self.log(record)
            self.callbacks.on_log(state, record)  # a callback's per-epoch training loss

    def validated(self, state, validation) -> None:
        """A validation ran after `state.step`: its console line (`best` when it improved)."""
        result = validation.result
        self.progress.validation(
            state.step, loss=result.loss, metrics=result.metrics, improved=validation.improved
        )

    def exclude_since(self, paused: float) -> None:
        """The time since `paused` (validation, checkpoints) is not training time; the ETA
        charges such pauses to the steps still to come instead of to the step rate."""
        seconds = time.perf_counter() - paused
        self._window_start += seconds
        self.progress.observe_pause(self._last_step, seconds)

    def _tokens_per_s(self, samples_per_s: float) -> dict:
        if self.tokens_per_sample is None:
            return {}
        return {"tokens_per_s": samples_per_s * self.tokens_per_sample}

    def mfu(self, samples_per_s: float) -> float | None:
        """Per device: samples/s over all ranks divided by the world size."""
        return mfu(samples_per_s / self.strategy.world_size, self.flops_per_sample, self.peak_flops)

    def _window_loss(self) -> torch.Tensor:  # the window's loss sum on this rank
        if not self._losses:
            return torch.zeros((), device=self.strategy.device)
        return torch.stack(self._losses).sum()

    def close(self) -> None:
        self.progress.close()
        if self.writer is not None:
            self.writer.close()
