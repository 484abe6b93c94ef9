"""`data.subsample.weights_use: loss`: each train row's cross-entropy term weighted by its
boosting round's sample weight (SAMME's weights fed to the loss instead of resampling).

The weights are rescaled to mean 1 over the train split, and a micro batch's loss is the
plain mean of w_i * ce_i. The step's usual scaling (mean over the micro batch, times its share
of the global batch) then makes the step's loss sum(w_i * ce_i) / B over the global batch, an
unbiased estimate of the normalized weighted mean sum(w * ce) / sum(w) over the split, and
exact for any world size or accumulation (a per-batch sum(w) denominator would be neither).
Rows are found by `StepBatch.sample_ids` (train-split row ids), so DDP's rank shards and the
loader's shuffle need nothing of their own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scaletrain.config import LossConfig, SubsampleConfig
from scaletrain.data.transforms.subsample import read_row_weights


class RowWeightedCrossEntropy(nn.Module):
    """(logits (B, C), class ids (B,), train-row ids (B,)) -> mean of w[id] * cross-entropy."""

    def __init__(self, row_weights: torch.Tensor, *, label_smoothing: float = 0.0):
        super().__init__()
        self.row_weights = row_weights.float()  # mean 1 over the split; CPU, as the ids
        self.label_smoothing = label_smoothing

    def forward(
        self, output: torch.Tensor, targets: torch.Tensor, sample_ids: torch.Tensor
    ) -> torch.Tensor:
        per_row = F.cross_entropy(
            output.float(), targets, reduction="none", label_smoothing=self.label_smoothing
        )
        # the table stays on the CPU beside the ids: one small copy per micro batch
        weights = self.row_weights[sample_ids].to(per_row.device, non_blocking=True)
        return (weights * per_row).mean()


def build_row_weighted_loss(
    subsample: SubsampleConfig | None, loss: LossConfig, *, task: str, num_rows: int
) -> RowWeightedCrossEntropy | None:
    """The weighted loss where `data.subsample` asks for one (a boosting round), else None.
    The config refused what the step cannot weigh (config/ensemble.py: check_row_weights),
    and `build_data` a task other than classification (data/transforms/subsample.py)."""
    if subsample is None or subsample.weights_use != "loss" or subsample.weights_file is None:
        return None
    assert task == "classification", task
    weights = torch.from_numpy(read_row_weights(subsample.weights_file, num_rows))
    return RowWeightedCrossEntropy(
        weights * (num_rows / weights.sum()), label_smoothing=loss.label_smoothing
    )
