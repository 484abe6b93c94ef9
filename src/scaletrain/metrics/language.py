"""Language-model metrics: perplexity and next-token accuracy over every predicted token.

States are float64 sums (cross-entropy in nats, correct predictions, tokens), so the synced
result is one process's result over the union of the tokens. Perplexity is exp of the mean
token cross-entropy: the validation loss's own exponent when the loss is cross-entropy.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.aggregation import SumMetric

from scaletrain.metrics.metric_set import METRIC_OPTIONS, MetricSet

# What ``compute`` returns; evaluation adds ``bits_per_byte`` where the split knows its bytes
LANGUAGE_METRICS = ("perplexity", "cross_entropy", "accuracy", "num_tokens")


def bits_per_byte(nats_per_token: float, bytes_per_token: float) -> float:
    """Cross-entropy in bits per UTF-8 byte of the text: nats/token x tokens / (bytes x ln 2),
    comparable across tokenizers (a larger vocabulary has more bytes per token)."""
    return nats_per_token / (math.log(2) * bytes_per_token)


class LanguageModelMetrics(MetricSet):
    """Logits (B, T, V) against next-token ids (B, T)."""

    def __init__(self) -> None:
        sums = ("nats", "correct", "num_tokens")
        # "disable": no NaN check, which would wait for the GPU on every batch.
        metrics = {name: SumMetric(nan_strategy="disable", **METRIC_OPTIONS) for name in sums}
        super().__init__({name: m.set_dtype(torch.float64) for name, m in metrics.items()})

    def update(self, output: Tensor, target: Tensor) -> None:
        logits = output.detach().flatten(0, -2).float()  # (B*T, V)
        target = target.detach().flatten()
        self._move_to(target.device)
        nats = F.cross_entropy(logits, target, reduction="sum").double()
        self._metrics["nats"].update(nats)
        self._metrics["correct"].update((logits.argmax(dim=-1) == target).sum().double())
        self._metrics["num_tokens"].update(target.new_full((), target.numel()).double())

    def _summarize(self, values: dict[str, Tensor]) -> dict:
        tokens = int(values["num_tokens"])
        mean = float(values["nats"]) / max(tokens, 1)
        return {
            "perplexity": math.exp(min(mean, 700.0)),
            "cross_entropy": mean,
            "accuracy": float(values["correct"]) / max(tokens, 1),
            "num_tokens": tokens,
        }
