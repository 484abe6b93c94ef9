"""SAMME (multi-class AdaBoost, Zhu et al. 2009): a round's member weight and the sample
weights the next round trains with. Pure numpy in float64, so a test can check it by hand.

Rounds are sequential by nature: round r's sample weights depend on round r-1's mistakes.
Not wired into training yet (`ensemble.method: boosting` is refused at config time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPSILON = 1e-10  # a perfect member would get an infinite weight


@dataclass(frozen=True)
class BoostingRound:
    error: float  # weighted share of the train rows the member got wrong
    alpha: float  # the member's weight in the combined vote
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


def is_better_than_chance(round_: BoostingRound) -> bool:
    """SAMME needs err < 1 - 1/K, i.e. alpha > 0 (past rounding); a worse member ends it."""
    return round_.alpha > 1e-9


def weighted_draw(weights: np.ndarray, *, seed: int) -> np.ndarray:
    """Boosting by resampling: len(weights) train-split rows drawn with replacement in
    proportion to the weights (sorted; the loader shuffles), a pure function of the seed."""
    weights = np.asarray(weights, dtype=np.float64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(len(weights), size=len(weights), p=weights / weights.sum()))


def samme_predict(member_labels: np.ndarray, alphas: np.ndarray, *, num_classes: int):
    """The boosted label per sample: argmax over classes of the summed alphas of the members
    voting for it; member_labels (M, N)."""
    scores = np.zeros((member_labels.shape[1], num_classes))
    for labels, alpha in zip(member_labels, alphas, strict=True):
        scores[np.arange(len(labels)), labels] += alpha
    return scores.argmax(axis=1)
