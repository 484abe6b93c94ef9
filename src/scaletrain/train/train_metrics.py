"""The training loss and main metric of each epoch, from the steps' own outputs.

Keras's `accuracy` beside `val_accuracy`: no extra forward pass, and no host sync before the
epoch ends (sums stay on the device; one all-reduce per epoch). The numbers describe the
weights as they changed during the epoch, with dropout on, as every framework's training
metric does; validation is the clean measurement.
"""

from __future__ import annotations

import math

import torch

from scaletrain.train.step import Scorer, StepOutput

METRIC_NAMES = {"classification": "accuracy", "regression": "mae", "language_model": "perplexity"}


def build_scorer(task: str, *, loss_name: str) -> Scorer | None:
    """Per micro batch, the sum the epoch's metric is made of (None: from the loss alone)."""
    if task == "classification" and loss_name != "bce_with_logits":
        return _correct
    if task == "regression":
        return lambda output, targets: (output.float() - targets).abs().sum()
    return None


def _correct(output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Correct predictions; mixup/cutmix's soft targets count their largest class."""
    labels = targets.argmax(dim=1) if targets.is_floating_point() else targets
    return (output.argmax(dim=1) == labels).sum()


class EpochTrainMetrics:
    """Sums over the epoch's steps on this rank; `compute` reduces them and starts anew."""

    def __init__(self, task: str, *, device: torch.device, num_outputs: int, scored: bool):
        self.task, self.num_outputs, self.scored = task, num_outputs, scored
        self._loss = torch.zeros((), dtype=torch.float64, device=device)
        self._score = torch.zeros((), dtype=torch.float64, device=device)
        self._samples = 0

    def add(self, output: StepOutput, num_samples_global: int) -> None:
        """One step: its loss share weighted by the step's size, and its metric sum."""
        self._loss.add_(output.loss, alpha=num_samples_global)  # one small op each
        if output.score is not None:
            self._score.add_(output.score)
        self._samples += num_samples_global

    def compute(self, strategy) -> dict | None:
        """{"loss": mean, "metrics": {name: value}} over the epoch (a collective)."""
        local = torch.stack([self._loss, self._score])
        sums = strategy.all_reduce_sum(local).tolist()  # the epoch's one host sync
        samples = self._samples  # already global: every rank counts the global batch
        self._loss.zero_()
        self._score.zero_()
        self._samples = 0
        if not samples:
            return None
        loss = sums[0] / samples
        name = METRIC_NAMES.get(self.task)
        if name == "perplexity":
            value = math.exp(min(loss, 700.0))
        elif name is None or not self.scored:
            return {"loss": loss, "metrics": {}}
        elif name == "mae":
            value = sums[1] / (samples * self.num_outputs)
        else:
            value = sums[1] / samples
        return {"loss": loss, "metrics": {name: value}}

    def state_dict(self) -> dict:
        """The partial epoch's sums (exact in JSON: float64), for a resume mid-epoch."""
        return {"loss": float(self._loss), "score": float(self._score), "samples": self._samples}

    def load_state_dict(self, state: dict) -> None:
        self._loss.fill_(float(state.get("loss", 0.0)))
        self._score.fill_(float(state.get("score", 0.0)))
        self._samples = int(state.get("samples", 0))
