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


CLASSES = 10


def _steps(num_steps: int, *, seed: int = 0):
    """(loss share, (outputs, targets), step size) per step; the last step is short."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [64] * (num_steps - 1) + [41]
    losses = torch.rand(num_steps, generator=generator)
    predictions = [
        (torch.randn(size, CLASSES, generator=generator), torch.randint(0, CLASSES, (size,)))
        for size in sizes
    ]
    return losses, predictions, sizes


def _correct_count(predictions) -> int:
    return sum(int((out.argmax(1) == target).sum()) for out, target in predictions)


def _metrics(task: str = "classification", outputs: int = CLASSES) -> EpochTrainMetrics:
    scorer = build_scorer(task, loss_name="auto")
    return EpochTrainMetrics(task, device="cpu", num_outputs=outputs, scorer=scorer)


def _add_all(metrics: EpochTrainMetrics, losses, predictions, sizes) -> None:
    for loss, pair, size in zip(losses, predictions, sizes, strict=True):
        metrics.add(StepOutput(loss, Verdict(), None, [pair]), size)


@pytest.mark.parametrize("num_steps", [3, EpochTrainMetrics.FOLD_EVERY * 2 + 7])
def test_epoch_loss_and_accuracy_equal_float64_sums(num_steps):
    losses, predictions, sizes = _steps(num_steps)
    metrics = _metrics()
    _add_all(metrics, losses, predictions, sizes)
    summary = metrics.compute(STRATEGY)
    total = sum(sizes)
    want_loss = math.fsum(float(loss) * size for loss, size in zip(losses, sizes, strict=True))
    assert summary["loss"] == pytest.approx(want_loss / total, rel=1e-12)
    accuracy = _correct_count(predictions) / total
    assert summary["metrics"] == {"accuracy": pytest.approx(accuracy, rel=1e-12)}
    assert metrics.compute(STRATEGY) is None  # compute starts a new epoch


def test_a_resumed_epoch_continues_its_sums():
    losses, predictions, sizes = _steps(40)
    whole = _metrics()
    _add_all(whole, losses, predictions, sizes)
    first = _metrics()
    _add_all(first, losses[:25], predictions[:25], sizes[:25])
    resumed = _metrics()
    resumed.load_state_dict(first.state_dict())
    _add_all(resumed, losses[25:], predictions[25:], sizes[25:])
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
    mae = _metrics("regression", outputs=2)
    pair = (torch.zeros(3, 2), torch.tensor([[1.0, -1.0], [2.0, 0.0], [0.0, 2.0]]))
    mae.add(StepOutput(torch.tensor(1.0), Verdict(), None, [pair]), 3)
    assert mae.compute(STRATEGY)["metrics"] == {"mae": 1.0}  # 6 / (3 samples x 2 outputs)
    lm = _metrics("language_model", outputs=100)
    lm.add(StepOutput(torch.tensor(2.0), Verdict(), None, None), 8)
    assert lm.compute(STRATEGY)["metrics"] == {"perplexity": pytest.approx(math.exp(2.0))}
