"""The epoch's training loss and metric from step outputs, against float64 references."""

from __future__ import annotations

import math

import pytest
import torch

from scaletrain.parallel import SingleStrategy
from scaletrain.train.guards import Verdict
from scaletrain.train.step import StepOutput
from scaletrain.train.train_metrics import EpochTrainMetrics, build_scorer

STRATEGY = SingleStrategy(torch.device("cpu"))


def _steps(num_steps: int, *, seed: int = 0):
    """(loss share, correct count, step size) per step; the last step is short."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [64] * (num_steps - 1) + [41]
    losses = torch.rand(num_steps, generator=generator)
    correct = [int(torch.randint(0, size + 1, (), generator=generator)) for size in sizes]
    return losses, correct, sizes


def _add_all(metrics: EpochTrainMetrics, losses, correct, sizes) -> None:
    for loss, right, size in zip(losses, correct, sizes, strict=True):
        output = StepOutput(loss, Verdict(), None, torch.tensor(right))
        metrics.add(output, size)


@pytest.mark.parametrize("num_steps", [3, EpochTrainMetrics.FOLD_EVERY * 2 + 7])
def test_epoch_loss_and_accuracy_equal_float64_sums(num_steps):
    losses, correct, sizes = _steps(num_steps)
    metrics = EpochTrainMetrics("classification", device="cpu", num_outputs=10, scored=True)
    _add_all(metrics, losses, correct, sizes)
    summary = metrics.compute(STRATEGY)
    total = sum(sizes)
    want_loss = math.fsum(float(loss) * size for loss, size in zip(losses, sizes, strict=True))
    assert summary["loss"] == pytest.approx(want_loss / total, rel=1e-12)
    assert summary["metrics"] == {"accuracy": pytest.approx(sum(correct) / total, rel=1e-12)}
    assert metrics.compute(STRATEGY) is None  # compute starts a new epoch


def test_a_resumed_epoch_continues_its_sums():
    losses, correct, sizes = _steps(40)
    whole = EpochTrainMetrics("classification", device="cpu", num_outputs=10, scored=True)
    _add_all(whole, losses, correct, sizes)
    first = EpochTrainMetrics("classification", device="cpu", num_outputs=10, scored=True)
    _add_all(first, losses[:25], correct[:25], sizes[:25])
    resumed = EpochTrainMetrics("classification", device="cpu", num_outputs=10, scored=True)
    resumed.load_state_dict(first.state_dict())
    _add_all(resumed, losses[25:], correct[25:], sizes[25:])
    expected, got = whole.compute(STRATEGY), resumed.compute(STRATEGY)
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-12)
    assert got["metrics"]["accuracy"] == pytest.approx(expected["metrics"]["accuracy"], rel=1e-12)


def test_scorers_count_what_the_metrics_mean():
    output = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 4.0]])
    assert build_scorer("classification", loss_name="auto")(output, torch.tensor([0, 1, 1])) == 2
    soft = torch.tensor([[0.7, 0.3], [0.4, 0.6], [0.2, 0.8]])  # mixup: the largest class counts
    assert build_scorer("classification", loss_name="auto")(output, soft) == 2
    regression = build_scorer("regression", loss_name="mse")
    assert regression(torch.tensor([[1.0], [2.0]]), torch.tensor([[0.5], [4.0]])) == 2.5
    assert build_scorer("language_model", loss_name="auto") is None


def test_mae_and_perplexity_summaries():
    mae = EpochTrainMetrics("regression", device="cpu", num_outputs=2, scored=True)
    mae.add(StepOutput(torch.tensor(1.0), Verdict(), None, torch.tensor(6.0)), 3)
    assert mae.compute(STRATEGY)["metrics"] == {"mae": 1.0}  # 6 / (3 samples x 2 outputs)
    lm = EpochTrainMetrics("language_model", device="cpu", num_outputs=100, scored=False)
    lm.add(StepOutput(torch.tensor(2.0), Verdict(), None, None), 8)
    assert lm.compute(STRATEGY)["metrics"] == {"perplexity": pytest.approx(math.exp(2.0))}
