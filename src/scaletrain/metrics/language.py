"""Language-model metrics: perplexity and next-token accuracy over every predicted token.

States are float64 sums (cross-entropy in nats, correct tokens, tokens), so the synced
result over ranks is one process's result over the union of the tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.aggregation import SumMetric

from scaletrain.metrics.metric_set import METRIC_OPTIONS, MetricSet

LANGUAGE_METRICS = ("perplexity", "accuracy")


class LanguageModelMetrics(MetricSet):
    """exp(mean cross-entropy per token) and the share of tokens predicted exactly."""

    def __init__(self) -> None:
        metrics = {
            name: SumMetric(nan_strategy="disable", **METRIC_OPTIONS).set_dtype(torch.float64)
            for name in ("nats", "correct", "tokens")
        }
        super().__init__(metrics)

    def update(self, output: Tensor, target: Tensor) -> None:
        """Logits (B, T, V) against next-token ids (B, T)."""
        logits = output.reshape(-1, output.shape[-1]).float()
        target = target.reshape(-1)
        nats = F.cross_entropy(logits, target, reduction="sum")
        self._metrics["nats"].update(nats.double())
        self._metrics["correct"].update((logits.argmax(dim=-1) == target).sum().double())
        self._metrics["tokens"].update(torch.tensor(float(target.numel()), dtype=torch.float64))

    def _summarize(self, values: dict[str, Tensor]) -> dict:
        tokens = float(values["tokens"])
        if not tokens:
            return {"perplexity": math.nan, "accuracy": math.nan}
        mean_nats = float(values["nats"]) / tokens
        return {
            "perplexity": math.exp(min(mean_nats, 700.0)),
            "accuracy": float(values["correct"]) / tokens,
        }
