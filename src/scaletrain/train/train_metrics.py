"""The training loss and main metric of each epoch, from the steps' own outputs.

Keras's `accuracy` beside `val_accuracy`: no extra forward pass, and no host sync before the
epoch ends (sums stay on the device; one all-reduce per epoch). The numbers describe the
weights as they changed during the epoch, with dropout on, as every framework's training
metric does; validation is the clean measurement.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from scaletrain.train.step import StepOutput

Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, targets) -> sum

METRIC_NAMES = {"classification": "accuracy", "regression": "mae", "language_model": "perplexity"}


def build_scorer(
    task: str, *, loss_name: str, target_scale: torch.Tensor | None = None
) -> Scorer | None:
    """The sum the epoch's metric is made of, over a batch of outputs (None: from the loss
    alone). `target_scale`: the std of standardized regression targets, so the MAE is in
    the original units as validation's is."""
    if task == "classification" and loss_name != "bce_with_logits":
        return _correct
    if task == "regression" and target_scale is not None:
        return lambda output, targets: (_match(output.float(), targets) * target_scale).sum()
    if task == "regression":
        return lambda output, targets: _match(output.float(), targets).sum()
    return None


def _match(output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """|output - target| per element, (B, 1) outputs against (B,) targets."""
    return (output.reshape(targets.shape) - targets).abs()


def _correct(output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Correct predictions; mixup/cutmix's soft targets count their largest class."""
    labels = targets.argmax(dim=1) if targets.is_floating_point() else targets
    return (output.argmax(dim=1) == labels).sum()


class EpochTrainMetrics:
    """Sums over the epoch's steps on this rank; `compute` reduces them and starts anew.

    A step only appends its loss and its (output, target) pairs to lists (no kernel); every
    `FOLD_EVERY` steps, after `FOLD_ELEMENTS` output elements, and at the epoch's end, they
    are concatenated and folded into float64 sums by a few kernels.
    """

    FOLD_EVERY = 512
    FOLD_ELEMENTS = 2**22  # 16 MB of fp32 outputs held at most

    def __init__(self, task: str, *, device: torch.device, num_outputs: int, scorer: Scorer | None):
        self.task, self.num_outputs, self.scorer = task, num_outputs, scorer
        self._sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss, score
        self._losses: list[torch.Tensor] = []
        self._sizes: list[int] = []
        self._predictions: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._elements = 0
        self._samples = 0

    def add(self, output: StepOutput, num_samples_global: int) -> None:
        """One step: its loss share weighted by the step's size, and its predictions."""
        self._losses.append(output.loss)
        self._sizes.append(num_samples_global)
        self._samples += num_samples_global
        if output.predictions:
            self._predictions += output.predictions
            self._elements += num_samples_global * self.num_outputs  # a bound, no kernel
        if len(self._sizes) >= self.FOLD_EVERY or self._elements >= self.FOLD_ELEMENTS:
            self._fold()

    def _fold(self) -> None:
        if self._sizes:
            sizes = torch.tensor(self._sizes, dtype=torch.float64, device=self._sums.device)
            self._sums[0] += torch.stack(self._losses).double() @ sizes
        if self._predictions and self.scorer is not None:
            outputs, targets = zip(*self._predictions, strict=True)
            self._sums[1] += self.scorer(torch.cat(outputs), torch.cat(targets)).double()
        self._losses, self._sizes, self._predictions, self._elements = [], [], [], 0

    def compute(self, strategy) -> dict | None:
        """{"loss": mean, "metrics": {name: value}} over the epoch (a collective)."""
        self._fold()
        sums = strategy.all_reduce_sum(self._sums).tolist()  # the epoch's one host sync
        samples = self._samples  # already global: every rank counts the global batch
        self._sums.zero_()
        self._samples = 0
        if not samples:
            return None
        loss = sums[0] / samples
        name = METRIC_NAMES.get(self.task)
        if name == "perplexity":
            value = math.exp(min(loss, 700.0))
        elif name is None or self.scorer is None:
            return {"loss": loss, "metrics": {}}
        elif name == "mae":
            value = sums[1] / (samples * self.num_outputs)
        else:
            value = sums[1] / samples
        return {"loss": loss, "metrics": {name: value}}

    def state_dict(self) -> dict:
        """The partial epoch's sums (exact in JSON: float64), for a resume mid-epoch."""
        self._fold()
        loss, score = self._sums.tolist()
        return {"loss": loss, "score": score, "samples": self._samples}

    def load_state_dict(self, state: dict) -> None:
        self._losses, self._sizes, self._predictions, self._elements = [], [], [], 0
        values = [float(state.get("loss", 0.0)), float(state.get("score", 0.0))]
        self._sums.copy_(torch.tensor(values, dtype=torch.float64))
        self._samples = int(state.get("samples", 0))
