"""Boosting's numbers, pure numpy in float64 so a test can check them by hand: SAMME and
SAMME.R (multi-class AdaBoost, Zhu et al. 2009) rounds for classification, and the stage
weights of gradient boosting on residuals for regression. The rounds themselves (training a
member, scoring it) are `rounds.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scaletrain.trained.ensemble import PROBABILITY_FLOOR  # the module clips the same

_EPSILON = 1e-10  # a perfect member would get an infinite weight


@dataclass(frozen=True)
class BoostingRound:
    error: float  # weighted share of the train rows the member got wrong
    alpha: float  # the member's weight in the combined vote (SAMME.R: 1)
    weights: np.ndarray  # the next round's sample weights (sum 1)


def samme_round(weights: np.ndarray, correct: np.ndarray, *, num_classes: int) -> BoostingRound:
    """err = sum(w * wrong) / sum(w); alpha = log((1 - err) / err) + log(num_classes - 1);
    the rows it got wrong are multiplied by exp(alpha), then all are normalized."""
    weights = np.asarray(weights, dtype=np.float64)
    wrong = ~np.asarray(correct, dtype=bool)
    error = float(np.clip((weights * wrong).sum() / weights.sum(), _EPSILON, 1 - _EPSILON))
    alpha = float(np.log((1 - error) / error) + np.log(num_classes - 1))
    updated = weights * np.exp(alpha * wrong)
    return BoostingRound(error, alpha, updated / updated.sum())


def samme_r_round(
    weights: np.ndarray, probabilities: np.ndarray, labels: np.ndarray
) -> BoostingRound:
    """SAMME.R: w_i *= exp(-(K-1)/K * y_i . log p(x_i)), y_i coded 1 for the true class and
    -1/(K-1) for the others, then normalized; every member votes with weight 1."""
    weights = np.asarray(weights, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    num_rows, num_classes = probabilities.shape
    log_p = np.log(np.clip(probabilities, PROBABILITY_FLOOR, None))
    coded = np.full((num_rows, num_classes), -1.0 / (num_classes - 1))
    coded[np.arange(num_rows), labels] = 1.0
    exponent = -(num_classes - 1) / num_classes * (coded * log_p).sum(axis=1)
    updated = weights * np.exp(exponent)
    wrong = probabilities.argmax(axis=1) != labels
    error = float((weights * wrong).sum() / weights.sum())
    return BoostingRound(error, 1.0, updated / updated.sum())


def samme_r_scores(probabilities: np.ndarray) -> np.ndarray:
    """One member's h_k(x) = (K-1) * (log p_k - mean_j log p_j), (N, K) -> (N, K)."""
    log_p = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), PROBABILITY_FLOOR, None))
    num_classes = log_p.shape[1]
    return (num_classes - 1) * (log_p - log_p.mean(axis=1, keepdims=True))


def samme_r_predict(member_probabilities: np.ndarray) -> np.ndarray:
    """The SAMME.R label per sample: argmax of the members' summed h; (M, N, K) -> (N,)."""
    return sum(samme_r_scores(p) for p in member_probabilities).argmax(axis=1)


def is_better_than_chance(round_: BoostingRound) -> bool:
    """SAMME needs err < 1 - 1/K, i.e. alpha > 0 (past rounding); a worse member ends it."""
    return round_.alpha > 1e-9


def samme_predict(member_labels: np.ndarray, alphas: np.ndarray, *, num_classes: int):
    """The boosted label per sample: argmax over classes of the summed alphas of the members
    voting for it; member_labels (M, N)."""
    scores = np.zeros((member_labels.shape[1], num_classes))
    for labels, alpha in zip(member_labels, alphas, strict=True):
        scores[np.arange(len(labels)), labels] += alpha
    return scores.argmax(axis=1)


def stage_weight(residuals: np.ndarray, stage: np.ndarray, *, learning_rate: float) -> float:
    """Round r >= 1's weight in F_r = F_{r-1} + weight * h_r: Friedman's line search
    gamma = <r, h> / <h, h> (the least-squares step along h_r on the train rows), shrunk by
    the learning rate, and 0 for a stage pointing away from the residuals (<r, h> < 0: its
    member learned the wrong way round; weights stay >= 0). With learning_rate <= 1 the train
    MSE cannot go up: |r - lr gamma h|^2 = |r|^2 - lr (2 - lr) <r, h>^2 / |h|^2. Round 0 has
    weight 1 (it fits the targets themselves: F_0 = 0 would leave most to shrunken rounds)."""
    residuals = np.asarray(residuals, dtype=np.float64).ravel()
    stage = np.asarray(stage, dtype=np.float64).ravel()
    norm = float(stage @ stage)
    return learning_rate * max(float(residuals @ stage), 0.0) / norm if norm > 0 else 0.0
