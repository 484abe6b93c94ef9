"""Losses: each equals its torch functional reference; class weights vs scikit-learn; errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from scaletrain.config import LossConfig
from scaletrain.errors import ConfigError, UserError
from scaletrain.optim import LOSSES, build_loss

generator = torch.Generator().manual_seed(0)
LOGITS = torch.randn(12, 4, generator=generator, dtype=torch.float64)
CLASS_IDS = torch.randint(0, 4, (12,), generator=generator)
VALUES = torch.randn(12, 3, generator=generator, dtype=torch.float64)
PREDICTIONS = torch.randn(12, 3, generator=generator, dtype=torch.float64)


def classification_loss(**options) -> torch.nn.Module:
    return build_loss(
        LossConfig(**options), task="classification", num_outputs=4, class_counts=[5, 3, 3, 1]
    )


def regression_loss(**options) -> torch.nn.Module:
    return build_loss(LossConfig(**options), task="regression", num_outputs=3, class_counts=None)


def test_auto_picks_cross_entropy_for_classes_and_mse_for_values():
    assert torch.equal(classification_loss()(LOGITS, CLASS_IDS), F.cross_entropy(LOGITS, CLASS_IDS))
    assert torch.equal(regression_loss()(PREDICTIONS, VALUES), F.mse_loss(PREDICTIONS, VALUES))


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_cross_entropy_with_label_smoothing(smoothing):
    loss = classification_loss(name="cross_entropy", label_smoothing=smoothing)(LOGITS, CLASS_IDS)
    want = F.cross_entropy(LOGITS, CLASS_IDS, label_smoothing=smoothing)
    assert loss.dtype == torch.float64 and torch.equal(loss, want)
    if smoothing:
        assert not torch.allclose(loss, F.cross_entropy(LOGITS, CLASS_IDS))


def test_balanced_weights_equal_scikit_learn():
    labels = np.array([0] * 7 + [1] * 2 + [2] * 3 + [3] * 1)
    counts = np.bincount(labels).tolist()
    module = build_loss(
        LossConfig(class_weights="balanced"),
        task="classification",
        num_outputs=4,
        class_counts=counts,
    )
    want = compute_class_weight("balanced", classes=np.arange(4), y=labels)
    assert np.allclose(module.weight.numpy(), want, rtol=1e-6)
    assert "weight" in dict(module.named_buffers())  # moved by .to(device) with the module
    reference = F.cross_entropy(LOGITS, CLASS_IDS, weight=torch.from_numpy(want))
    assert torch.allclose(module(LOGITS, CLASS_IDS), reference, rtol=1e-6)


def test_listed_class_weights_and_smoothing_together():
    weights = [1.0, 2.0, 0.5, 3.0]
    loss = classification_loss(class_weights=weights, label_smoothing=0.2)(LOGITS, CLASS_IDS)
    want = F.cross_entropy(
        LOGITS, CLASS_IDS, weight=torch.tensor(weights, dtype=torch.float64), label_smoothing=0.2
    )
    assert torch.allclose(loss, want, rtol=1e-12)


def test_cross_entropy_on_sequences_flattens_time():
    logits = torch.randn(3, 5, 4, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 4, (3, 5), generator=generator)
    want = F.cross_entropy(logits.reshape(15, 4), targets.reshape(15))
    assert torch.equal(classification_loss()(logits, targets), want)


def test_bce_with_logits_multi_label_binary_and_one_vs_rest():
    multi_hot = (torch.rand(12, 3, generator=generator) > 0.5).double()
    module = regression_loss(name="bce_with_logits")
    assert torch.equal(
        module(PREDICTIONS, multi_hot), F.binary_cross_entropy_with_logits(PREDICTIONS, multi_hot)
    )
    binary = build_loss(
        LossConfig(name="bce_with_logits"), task="classification", num_outputs=1, class_counts=None
    )
    ids = torch.randint(0, 2, (12,), generator=generator)
    one_logit = LOGITS[:, :1]
    want = F.binary_cross_entropy_with_logits(one_logit[:, 0], ids.double())
    assert torch.allclose(binary(one_logit, ids), want, rtol=1e-14)
    one_vs_rest = classification_loss(name="bce_with_logits")(LOGITS, CLASS_IDS)
    want = F.binary_cross_entropy_with_logits(LOGITS, F.one_hot(CLASS_IDS, 4).double())
    assert torch.allclose(one_vs_rest, want, rtol=1e-14)


@pytest.mark.parametrize(
    ("options", "reference"),
    [
        ({"name": "mse"}, lambda out, tgt: F.mse_loss(out, tgt)),
        ({"name": "mae"}, lambda out, tgt: F.l1_loss(out, tgt)),
        ({"name": "huber"}, lambda out, tgt: F.huber_loss(out, tgt, delta=1.0)),
        ({"name": "huber", "huber_delta": 0.3}, lambda out, tgt: F.huber_loss(out, tgt, delta=0.3)),
    ],
)
def test_regression_losses_equal_torch(options, reference):
    module = regression_loss(**options)
    assert torch.equal(module(PREDICTIONS, VALUES), reference(PREDICTIONS, VALUES))
    # One target: (B, 1) outputs against (B,) targets (and the reverse) are the same loss.
    column, flat = PREDICTIONS[:, :1], VALUES[:, 0]
    want = reference(column[:, 0], flat)
    assert torch.equal(module(column, flat), want)
    assert torch.equal(module(column[:, 0], flat[:, None]), want)


def test_huber_delta_changes_the_loss():
    small, large = regression_loss(name="huber", huber_delta=0.1), regression_loss(name="huber")
    assert not torch.allclose(small(PREDICTIONS, VALUES), large(PREDICTIONS, VALUES))


def test_kl_div_on_probabilities_and_on_class_ids():
    targets = torch.softmax(torch.randn(12, 4, generator=generator, dtype=torch.float64), -1)
    module = classification_loss(name="kl_div")
    want = F.kl_div(F.log_softmax(LOGITS, -1), targets, reduction="batchmean")
    assert torch.allclose(module(LOGITS, targets), want, rtol=1e-14)
    # One-hot targets have zero entropy: KL equals cross-entropy.
    assert torch.allclose(module(LOGITS, CLASS_IDS), F.cross_entropy(LOGITS, CLASS_IDS), rtol=1e-12)


def test_bf16_outputs_give_a_float32_loss():
    loss = classification_loss()(LOGITS.bfloat16(), CLASS_IDS)
    assert loss.dtype == torch.float32
    assert torch.allclose(loss.double(), F.cross_entropy(LOGITS.bfloat16().double(), CLASS_IDS))


@pytest.mark.parametrize(
    ("options", "task", "key"),
    [
        ({"name": "cross_entropy"}, "regression", "loss.name"),
        ({"name": "mse"}, "classification", "loss.name"),
        ({"name": "huber"}, "classification", "loss.name"),
        ({"class_weights": [1.0, 2.0]}, "classification", "loss.class_weights"),
        ({"name": "mse", "label_smoothing": 0.1}, "regression", "loss.label_smoothing"),
        ({"name": "mae", "class_weights": "balanced"}, "regression", "loss.class_weights"),
    ],
)
def test_bad_combinations_name_the_key(options, task, key):
    with pytest.raises(ConfigError, match="^" + re.escape(key)):
        build_loss(LossConfig(**options), task=task, num_outputs=4, class_counts=[3, 3, 3, 3])


def test_balanced_needs_counts_with_every_class():
    cfg = LossConfig(class_weights="balanced")
    with pytest.raises(ConfigError, match=r"^loss\.class_weights.*\[2\]"):
        build_loss(cfg, task="classification", num_outputs=3, class_counts=[4, 1, 0])
    with pytest.raises(ConfigError, match=r"^loss\.class_weights"):
        build_loss(cfg, task="classification", num_outputs=3, class_counts=None)


def test_mismatched_shapes_are_refused_not_broadcast():
    with pytest.raises(UserError, match="loss.name=mse"):
        regression_loss()(PREDICTIONS, VALUES[:, :2])


def test_registry_holds_every_configurable_loss():
    names = set(LossConfig.model_fields["name"].annotation.__args__) - {"auto"}
    assert set(LOSSES) == names
