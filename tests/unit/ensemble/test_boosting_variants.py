"""Boosting's variants against numbers worked out by hand: SAMME's weights fed to the loss,
SAMME.R's sample weights and combination, gradient boosting's stage weights."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from scaletrain.config import LossConfig, SubsampleConfig, load_config
from scaletrain.data import build_data
from scaletrain.data.transforms.subsample import subsample_indices
from scaletrain.ensemble.boosting import (
    samme_r_predict,
    samme_r_round,
    samme_round,
    stage_weight,
)
from scaletrain.errors import ConfigError
from scaletrain.train.row_weights import build_row_weighted_loss
from scaletrain.trained.ensemble import EnsembleModule


def _weights_file(tmp_path, weights) -> str:
    path = tmp_path / "round_0.npy"
    np.save(path, np.asarray(weights, dtype=np.float64), allow_pickle=False)
    return str(path)


def _row_loss(tmp_path, weights, **loss):
    subsample = SubsampleConfig(weights_file=_weights_file(tmp_path, weights), weights_use="loss")
    return build_row_weighted_loss(
        subsample, LossConfig(**loss), task="classification", num_rows=len(weights)
    )


def test_the_row_weighted_loss_equals_a_float64_hand_computation(tmp_path):
    # 5 train rows weighted 1, 2, 3, 4, 0: rescaled to mean 1 -> 0.5, 1, 1.5, 2, 0.
    loss = _row_loss(tmp_path, [1.0, 2.0, 3.0, 4.0, 0.0])
    logits = [[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [-1.0, 3.0, 1.0]]
    targets, ids = [1, 0, 1], [3, 0, 4]  # a micro batch of rows 3, 0 and 4
    row_weights = {3: 2.0, 0: 0.5, 4: 0.0}
    expected = 0.0
    for row, label, row_id in zip(logits, targets, ids, strict=True):
        cross_entropy = math.log(sum(math.exp(z) for z in row)) - row[label]
        expected += row_weights[row_id] * cross_entropy / 3
    got = loss(torch.tensor(logits), torch.tensor(targets), torch.tensor(ids))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_on_the_whole_split_the_row_weighted_loss_is_the_normalized_weighted_mean(tmp_path):
    torch.manual_seed(0)
    weights = np.random.default_rng(0).random(40)
    loss = _row_loss(tmp_path, weights)
    logits, targets = torch.randn(40, 4, dtype=torch.float64), torch.randint(0, 4, (40,))
    per_row = nn.functional.cross_entropy(logits, targets, reduction="none").numpy()
    expected = (weights * per_row).sum() / weights.sum()
    got = loss(logits.float(), targets, torch.arange(40))
    assert got.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"loss": {"class_weights": [1.0, 2.0]}}, "set loss.class_weights to `none`"),
        ({"loss": {"name": "bce_with_logits"}}, "weighs a classification cross-entropy"),
        ({"data": {"task": "regression"}}, "weighs a classification cross-entropy"),
    ],
)
def test_the_config_refuses_row_weights_the_step_cannot_honour(tmp_path, section, message):
    data = {"subsample": {"weights_file": _weights_file(tmp_path, [1.0]), "weights_use": "loss"}}
    raw = {**section, "data": {**data, **section.get("data", {})}}
    with pytest.raises(ConfigError, match=message):
        load_config(raw)


def test_row_weights_on_data_that_resolves_to_regression_are_refused_by_build_data(tmp_path):
    data = {"name": "diabetes", "subsample": {"weights_file": "w.npy", "weights_use": "loss"}}
    with pytest.raises(ConfigError, match="the data is a regression task; use `draw`"):
        build_data(load_config({"data": data}).data, seed=0)


def test_drawn_rows_need_no_weighted_loss(tmp_path):
    drawn = SubsampleConfig(weights_file=_weights_file(tmp_path, [1.0, 1.0]))
    assert build_row_weighted_loss(drawn, LossConfig(), task="classification", num_rows=2) is None


def test_a_loss_weighted_round_trains_on_every_row_once(tmp_path):
    subsample = SubsampleConfig(
        weights_file=_weights_file(tmp_path, [5.0, 1.0, 1.0, 1.0]), weights_use="loss"
    )
    assert subsample_indices(4, subsample).tolist() == [0, 1, 2, 3]
    drawn = SubsampleConfig(weights_file=subsample.weights_file, seed=3)
    assert subsample_indices(4, drawn).tolist() != [0, 1, 2, 3]  # resampling repeats rows


def test_samme_with_loss_weights_two_rounds_match_the_hand_computed_reference(tmp_path):
    # Round 0 (uniform weights 1/4) gets row 3 wrong; 3 classes: err = 1/4,
    # alpha = log(3) + log(2) = log 6; row 3: 6/4, others 1/4; sum 9/4 -> 1/9, 1/9, 1/9, 2/3.
    first = samme_round(np.full(4, 0.25), np.array([1, 1, 1, 0]), num_classes=3)
    assert first.alpha == pytest.approx(math.log(6))
    np.testing.assert_allclose(first.weights, [1 / 9, 1 / 9, 1 / 9, 2 / 3], rtol=1e-12)
    # Round 1 trains on those weights in its loss: mean 1 -> 4/9, 4/9, 4/9, 8/3 per row.
    loss = _row_loss(tmp_path, first.weights)
    np.testing.assert_allclose(loss.row_weights.numpy(), [4 / 9, 4 / 9, 4 / 9, 8 / 3], rtol=1e-6)
    # It gets row 0 wrong: err = 1/9, alpha = log(8) + log(2) = log 16; row 0: 16/9;
    # sum 16/9 + 2/9 + 6/9 = 24/9 -> 2/3, 1/24, 1/24, 1/4.
    second = samme_round(first.weights, np.array([0, 1, 1, 1]), num_classes=3)
    assert second.error == pytest.approx(1 / 9)
    assert second.alpha == pytest.approx(math.log(16))
    np.testing.assert_allclose(second.weights, [2 / 3, 1 / 24, 1 / 24, 1 / 4], rtol=1e-12)


def test_samme_r_two_rounds_match_the_hand_computed_reference():
    # K = 3, y coded 1 / -1/2. Row 0 (class 0) p = (.5, .25, .25): y.log p = log 2, factor
    # exp(-2/3 log 2) = 2^(-2/3); row 1 (class 1), same p: y.log p = -1/2 log 2, factor 2^(1/3).
    # Normalized: 2^(-2/3) : 2^(1/3) = 1 : 2 -> 1/3, 2/3; argmax says class 0 twice: err 1/2.
    first_p = np.array([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]])
    first = samme_r_round(np.full(2, 0.5), first_p, np.array([0, 1]))
    assert first.alpha == 1.0 and first.error == pytest.approx(0.5)
    np.testing.assert_allclose(first.weights, [1 / 3, 2 / 3], rtol=1e-12)
    # Round 2, p = (.25, .5, .25) for both: row 0 factor 2^(1/3), row 1 2^(-2/3):
    # 1/3 * 2^(1/3) = 2/3 * 2^(-2/3) -> 1/2, 1/2; err = weight of row 0 = 1/3.
    second_p = np.array([[0.25, 0.5, 0.25], [0.25, 0.5, 0.25]])
    second = samme_r_round(first.weights, second_p, np.array([0, 1]))
    assert second.error == pytest.approx(1 / 3)
    np.testing.assert_allclose(second.weights, [0.5, 0.5], rtol=1e-12)


def test_samme_r_module_predicts_the_argmax_of_the_summed_h():
    torch.manual_seed(0)
    members, inputs = [nn.Linear(4, 5) for _ in range(3)], torch.randn(200, 4)
    with torch.no_grad():
        probabilities = np.stack([m(inputs).softmax(1).double().numpy() for m in members])
        module = EnsembleModule(members, task="classification", combine="samme_r")
        combined = module(inputs).exp().double().numpy()
    assert np.array_equal(combined.argmax(1), samme_r_predict(probabilities))
    # its probabilities: softmax(sum_m h_m / (M (K - 1))), the normalized geometric mean
    log_mean = np.log(probabilities).mean(0)
    expected = np.exp(log_mean) / np.exp(log_mean).sum(1, keepdims=True)
    np.testing.assert_allclose(combined, expected, rtol=1e-5)


def test_a_stage_weight_is_the_shrunk_line_search_and_never_raises_the_train_mse():
    # r = (1, 2, 3), h = (1, 1, 0): gamma = <r, h> / <h, h> = 3 / 2; shrunk by 0.5: 3/4.
    residuals, stage = np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0])
    assert stage_weight(residuals, stage, learning_rate=0.5) == pytest.approx(0.75)
    assert stage_weight(residuals, np.zeros(3), learning_rate=0.5) == 0.0
    assert stage_weight(residuals, -stage, learning_rate=0.5) == 0.0  # wrong way round
    rng = np.random.default_rng(0)
    for _ in range(20):  # a useless stage (pure noise) gets a weight that does no harm
        residuals, stage = rng.normal(size=50), rng.normal(size=50)
        weight = stage_weight(residuals, stage, learning_rate=1.0)
        assert np.square(residuals - weight * stage).sum() <= np.square(residuals).sum()


def test_gradient_boosting_sums_the_stages_with_their_weights():
    torch.manual_seed(0)
    members, inputs = [nn.Linear(3, 2) for _ in range(3)], torch.randn(16, 3)
    module = EnsembleModule(members, task="regression", combine="sum", weights=[1.0, 0.3, 0.1])
    with torch.no_grad():
        expected = members[0](inputs) + 0.3 * members[1](inputs) + 0.1 * members[2](inputs)
        assert torch.allclose(module(inputs), expected, atol=1e-6)


def _step_loss(loss, split, *, rank: int, world_size: int, micro_batch_size: int):
    """The loss a rank backpropagates in its first step, scaled as `TrainStep` scales it."""
    from scaletrain.data import BatchLoader

    loader = BatchLoader(
        split,
        global_batch_size=12,
        micro_batch_size=micro_batch_size,
        shuffle=True,
        seed=3,
        drop_last=False,
        rank=rank,
        world_size=world_size,
        num_workers=0,
    )
    batch, offset, total = next(iter(loader)), 0, torch.tensor(0.0, dtype=torch.float64)
    for inputs, targets in batch.micro_batches:
        size = len(targets)
        ids = batch.sample_ids[offset : offset + size]
        share = size * world_size / batch.num_samples_global
        total = total + loss(inputs, targets, ids).double() * share
        offset += size
    return total, batch.sample_ids


def test_ddp_ranks_and_accumulation_give_the_one_process_weighted_loss(tmp_path):
    """DDP averages the ranks' gradients: the mean of their scaled losses must be the one
    process's loss on the same global batch, for any micro batch size."""
    from scaletrain.data import Split

    torch.manual_seed(0)
    logits, targets = torch.randn(30, 4), torch.randint(0, 4, (30,))
    loss = _row_loss(tmp_path, np.random.default_rng(1).random(30) * 5)
    split = Split(logits, targets)
    single, ids = _step_loss(loss, split, rank=0, world_size=1, micro_batch_size=12)
    ranks = [_step_loss(loss, split, rank=r, world_size=2, micro_batch_size=2) for r in (0, 1)]
    assert sorted(torch.cat([r[1] for r in ranks]).tolist()) == sorted(ids.tolist())
    assert (ranks[0][0] + ranks[1][0]).item() / 2 == pytest.approx(single.item(), rel=1e-6)
