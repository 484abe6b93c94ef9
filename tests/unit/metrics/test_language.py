"""Language-model metrics against plain torch over several batches."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scaletrain.metrics import METRICS, build_metrics


def test_perplexity_and_accuracy_match_plain_torch():
    torch.manual_seed(0)
    batches = [(torch.randn(3, 5, 11), torch.randint(0, 11, (3, 5))) for _ in range(3)]
    batches.append((torch.randn(1, 5, 11).bfloat16(), torch.randint(0, 11, (1, 5))))
    metrics = build_metrics("language_model", num_classes=None)
    for logits, targets in batches:
        metrics.update(logits, targets)
    logits = torch.cat([b[0].double().flatten(0, 1) for b in batches])
    targets = torch.cat([b[1].flatten() for b in batches])
    mean = F.cross_entropy(logits, targets).item()
    result = metrics.compute()
    assert result["num_tokens"] == 50
    assert result["cross_entropy"] == pytest.approx(mean, rel=1e-6)
    assert result["perplexity"] == pytest.approx(math.exp(mean), rel=1e-6)
    accuracy = (logits.argmax(dim=1) == targets).double().mean().item()
    assert result["accuracy"] == pytest.approx(accuracy)
    assert set(result) == set(METRICS["language_model"])
