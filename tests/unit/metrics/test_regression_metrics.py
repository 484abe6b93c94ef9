"""Regression metrics against scikit-learn in float64, batched and across in-process "ranks"."""

from __future__ import annotations

import json
import math

import pytest
import torch
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from scaletrain.errors import DataError
from scaletrain.metrics import METRICS, RegressionMetrics, build_metrics

TOLERANCE = {"rel": 1e-6, "abs": 1e-6}


def _regression_data(num_samples: int, num_outputs: int, *, seed: int = 0):
    """Targets with a large offset (R2's sums of squares cancel badly without float64)."""
    generator = torch.Generator().manual_seed(seed)
    targets = 50.0 + 3.0 * torch.randn(num_samples, num_outputs, generator=generator)
    noise = torch.randn(num_samples, num_outputs, generator=generator)
    outputs = targets + noise * torch.linspace(0.5, 2.0, num_outputs)
    return outputs.float(), targets.float()


def _feed(metric_set, outputs, targets, *, batch_size: int = 33) -> None:
    for output, target in zip(outputs.split(batch_size), targets.split(batch_size), strict=True):
        metric_set.update(output, target)


def _assert_matches_sklearn(result: dict, outputs: torch.Tensor, targets: torch.Tensor) -> None:
    expected, predicted = targets.double().numpy(), outputs.double().numpy()
    mse = mean_squared_error(expected, predicted)
    assert result["mse"] == pytest.approx(mse, **TOLERANCE)
    assert result["rmse"] == pytest.approx(math.sqrt(mse), **TOLERANCE)
    assert result["mae"] == pytest.approx(mean_absolute_error(expected, predicted), **TOLERANCE)
    assert result["r2"] == pytest.approx(r2_score(expected, predicted), **TOLERANCE)
    assert result["num_samples"] == len(expected)


def test_single_output_column_against_flat_targets():
    outputs, targets = _regression_data(500, 1)
    metric_set = build_metrics("regression", num_classes=None)
    _feed(metric_set, outputs, targets[:, 0])  # model output (B, 1), targets (B,)
    result = metric_set.compute()
    assert 0.5 < result["r2"] < 0.99
    _assert_matches_sklearn(result, outputs[:, 0], targets[:, 0])


def test_multi_output_uniform_average_matches_sklearn():
    outputs, targets = _regression_data(400, 3, seed=1)
    metric_set = build_metrics("regression", num_classes=None)
    _feed(metric_set, outputs, targets, batch_size=64)
    result = metric_set.compute()
    _assert_matches_sklearn(result, outputs, targets)
    per_output = r2_score(targets.numpy(), outputs.numpy(), multioutput="raw_values")
    assert per_output.min() < result["r2"] < per_output.max()  # really an average of differing R2s


def test_float64_inputs_match_to_double_precision():
    generator = torch.Generator().manual_seed(2)
    targets = torch.randn(300, 2, generator=generator, dtype=torch.float64)
    outputs = targets + 0.3 * torch.randn(300, 2, generator=generator, dtype=torch.float64)
    metric_set = build_metrics("regression", num_classes=None)
    _feed(metric_set, outputs, targets)
    result = metric_set.compute()
    assert result["mse"] == pytest.approx(mean_squared_error(targets, outputs), rel=1e-12)
    assert result["r2"] == pytest.approx(r2_score(targets, outputs), rel=1e-12)


def test_two_uneven_ranks_equal_one_process_exactly(compute_across_ranks):
    outputs, targets = _regression_data(300, 2, seed=3)
    single = build_metrics("regression", num_classes=None)
    _feed(single, outputs, targets)
    ranks = [build_metrics("regression", num_classes=None).to("cpu") for _ in range(2)]
    _feed(ranks[0], outputs[:220], targets[:220], batch_size=50)
    _feed(ranks[1], outputs[220:], targets[220:], batch_size=17)
    local_before = ranks[1].compute()
    gathered = compute_across_ranks(ranks)
    expected = single.compute()
    assert gathered[0] == gathered[1]
    assert gathered[0]["num_samples"] == expected["num_samples"] == 300
    for name in ("mse", "mae", "rmse", "r2"):
        # Same float64 sums, added in another order: equal to the last bits or so.
        assert gathered[0][name] == pytest.approx(expected[name], rel=1e-12)
    assert ranks[1].compute() == local_before


def test_reset_starts_over_and_result_is_plain_json():
    outputs, targets = _regression_data(100, 2, seed=4)
    metric_set = build_metrics("regression", num_classes=None)
    assert isinstance(metric_set, RegressionMetrics)
    _feed(metric_set, outputs, targets)
    first = metric_set.compute()
    metric_set.reset()
    _feed(metric_set, outputs[:50], targets[:50])
    second = metric_set.compute()
    assert second["num_samples"] == 50 and second != first
    assert json.loads(json.dumps(second)) == second
    assert set(second) == set(METRICS["regression"])
    assert all(type(second[name]) is float for name in ("mse", "mae", "rmse", "r2"))


def test_output_width_mismatch_names_both_shapes():
    metric_set = build_metrics("regression", num_classes=None)
    with pytest.raises(DataError, match=r"\(4, 3\).*\(4, 2\)"):
        metric_set.update(torch.zeros(4, 3), torch.zeros(4, 2))
