"""Classification metrics against scikit-learn, batched and across in-process "ranks"."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    precision_recall_fscore_support,
)

from scaletrain.errors import DataError
from scaletrain.metrics import METRICS, ClassificationMetrics, build_metrics

NUM_DIGITS = 10
EXACT = {"rel": 1e-12, "abs": 1e-12}  # float64 on both sides; only summation order differs


@pytest.fixture(scope="module")
def digits_predictions() -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of a weak (few-iteration) logistic regression on held-out digits, and labels."""
    features, labels = load_digits(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # stopped early on purpose
        model = LogisticRegression(max_iter=8).fit(features[:600] / 16, labels[:600])
    logits = model.decision_function(features[600:] / 16)
    return torch.tensor(logits, dtype=torch.float32), torch.tensor(labels[600:])


def _feed(metric_set, logits, targets, *, batch_size: int = 97) -> None:
    for output, target in zip(logits.split(batch_size), targets.split(batch_size), strict=True):
        metric_set.update(output, target)


def _assert_matches_sklearn(result: dict, targets: np.ndarray, predictions: np.ndarray) -> None:
    num_classes = len(result["per_class"]["precision"])
    assert result["accuracy"] == pytest.approx(accuracy_score(targets, predictions), **EXACT)
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            targets, predictions, average=average, zero_division=0
        )
        assert result[f"precision_{average}"] == pytest.approx(precision, **EXACT)
        assert result[f"recall_{average}"] == pytest.approx(recall, **EXACT)
        assert result[f"f1_{average}"] == pytest.approx(f1, **EXACT)
    labels = list(range(num_classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, predictions, labels=labels, average=None, zero_division=0
    )
    per_class = result["per_class"]
    assert per_class["precision"] == pytest.approx(precision.tolist(), **EXACT)
    assert per_class["recall"] == pytest.approx(recall.tolist(), **EXACT)
    assert per_class["f1"] == pytest.approx(f1.tolist(), **EXACT)
    assert per_class["support"] == support.tolist()
    assert (
        result["confusion_matrix"] == confusion_matrix(targets, predictions, labels=labels).tolist()
    )
    assert result["num_samples"] == len(targets)


def test_digits_in_batches_match_sklearn(digits_predictions):
    logits, targets = digits_predictions
    metric_set = build_metrics("classification", num_classes=NUM_DIGITS)
    _feed(metric_set, logits, targets)
    result = metric_set.compute()
    predictions = logits.argmax(dim=1).numpy()
    assert 0.5 < result["accuracy"] < 0.99  # a weak model: every metric is non-trivial
    _assert_matches_sklearn(result, targets.numpy(), predictions)


def test_digits_match_classification_report(digits_predictions):
    logits, targets = digits_predictions
    metric_set = build_metrics("classification", num_classes=NUM_DIGITS)
    _feed(metric_set, logits, targets, batch_size=50)
    result = metric_set.compute()
    report = classification_report(targets.numpy(), logits.argmax(dim=1).numpy(), output_dict=True)
    assert result["accuracy"] == pytest.approx(report["accuracy"], **EXACT)
    for average in ("macro", "weighted"):
        row = report[f"{average} avg"]
        assert result[f"precision_{average}"] == pytest.approx(row["precision"], **EXACT)
        assert result[f"recall_{average}"] == pytest.approx(row["recall"], **EXACT)
        assert result[f"f1_{average}"] == pytest.approx(row["f1-score"], **EXACT)
        assert result["num_samples"] == row["support"]
    for label in range(NUM_DIGITS):
        row = report[str(label)]
        assert result["per_class"]["precision"][label] == pytest.approx(row["precision"], **EXACT)
        assert result["per_class"]["recall"][label] == pytest.approx(row["recall"], **EXACT)
        assert result["per_class"]["f1"][label] == pytest.approx(row["f1-score"], **EXACT)
        assert result["per_class"]["support"][label] == row["support"]


def test_never_predicted_and_absent_classes_follow_zero_division_0():
    # Class 2 occurs but is never predicted; class 3 is predicted but never occurs;
    # class 4 never appears at all (macro skips it, as sklearn does without `labels`).
    targets = np.array([0] * 40 + [1] * 30 + [2] * 10 + [0] * 5)
    predictions = np.array([0] * 35 + [1] * 5 + [1] * 28 + [3] * 2 + [0] * 6 + [1] * 4 + [3] * 5)
    logits = torch.nn.functional.one_hot(torch.tensor(predictions), 5).float()
    metric_set = build_metrics("classification", num_classes=5)
    _feed(metric_set, logits, torch.tensor(targets), batch_size=16)
    result = metric_set.compute()
    _assert_matches_sklearn(result, targets, predictions)
    assert result["per_class"]["precision"][2] == 0.0  # never predicted
    assert result["per_class"]["recall"][3] == 0.0  # never true
    assert result["per_class"]["f1"][4] == 0.0 and result["per_class"]["support"][4] == 0


def test_single_binary_logit_is_thresholded_at_zero():
    logits = torch.tensor([[-2.0], [0.5], [3.0], [-0.1], [0.2], [-1.0]])
    targets = torch.tensor([0, 1, 0, 1, 1, 0])
    metric_set = build_metrics("classification", num_classes=2)
    metric_set.update(logits, targets)
    result = metric_set.compute()
    predictions = (logits[:, 0] > 0).long().numpy()
    _assert_matches_sklearn(result, targets.numpy(), predictions)


def test_two_uneven_ranks_equal_one_process_exactly(digits_predictions, compute_across_ranks):
    logits, targets = digits_predictions
    single = build_metrics("classification", num_classes=NUM_DIGITS)
    _feed(single, logits, targets)
    ranks = [build_metrics("classification", num_classes=NUM_DIGITS) for _ in range(2)]
    _feed(ranks[0], logits[:250], targets[:250], batch_size=64)
    _feed(ranks[1], logits[250:], targets[250:], batch_size=40)
    local_before = ranks[0].compute()
    gathered = compute_across_ranks(ranks)
    assert gathered[0] == gathered[1] == single.compute()
    assert ranks[0].compute() == local_before  # states un-synced again after compute


def test_rank_without_samples_still_joins_and_gets_global_result(
    digits_predictions, compute_across_ranks
):
    logits, targets = digits_predictions
    single = build_metrics("classification", num_classes=NUM_DIGITS)
    _feed(single, logits, targets)
    ranks = [build_metrics("classification", num_classes=NUM_DIGITS) for _ in range(3)]
    _feed(ranks[0], logits[:500], targets[:500])
    _feed(ranks[2], logits[500:], targets[500:])
    results = compute_across_ranks(ranks)
    assert results[0] == results[1] == results[2] == single.compute()


def test_compute_keeps_states_and_reset_clears_them(digits_predictions):
    logits, targets = digits_predictions
    whole = build_metrics("classification", num_classes=NUM_DIGITS)
    _feed(whole, logits, targets)
    metric_set = build_metrics("classification", num_classes=NUM_DIGITS)
    _feed(metric_set, logits[:300], targets[:300])
    first = metric_set.compute()
    _feed(metric_set, logits[300:], targets[300:])
    assert metric_set.compute() == whole.compute() != first
    metric_set.reset()
    _feed(metric_set, logits[:300], targets[:300])
    assert metric_set.compute() == first


def test_result_is_plain_json():
    metric_set = build_metrics("classification", num_classes=3)
    metric_set.update(torch.eye(3).repeat(2, 1), torch.tensor([0, 1, 2, 0, 2, 2]))
    result = metric_set.compute()
    assert json.loads(json.dumps(result)) == result
    assert set(result) == set(METRICS["classification"])
    assert type(result["accuracy"]) is float and type(result["num_samples"]) is int
    assert all(type(count) is int for row in result["confusion_matrix"] for count in row)
    # predictions 0 1 2 0 1 2: the true-2 sample predicted 1 sits in row 2, column 1
    assert result["confusion_matrix"] == [[2, 0, 0], [0, 1, 0], [0, 1, 2]]


def test_out_of_range_target_names_the_class_count():
    metric_set = build_metrics("classification", num_classes=3)
    metric_set.update(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(DataError, match=r"\[0, 3\].*3 classes"):
        metric_set.compute()


def test_build_metrics_rejects_bad_requests():
    assert isinstance(build_metrics("classification", num_classes=4), ClassificationMetrics)
    with pytest.raises(ValueError, match="num_classes"):
        build_metrics("classification", num_classes=None)
    with pytest.raises(ValueError, match="segmentation"):
        build_metrics("segmentation", num_classes=3)
