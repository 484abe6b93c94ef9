"""SAMME (multi-class AdaBoost, Zhu et al. 2009): a round's member weight and the sample
weights the next round trains with. Pure numpy in float64, so a test can check it by hand.

Rounds are sequential by nature: round r's sample weights depend on round r-1's mistakes,
so `--nproc` does not apply. Each member trains on rows drawn in proportion to its round's
weights (boosting by resampling: the loss itself stays unweighted).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaletrain.config import Config
from scaletrain.data import DataBundle
from scaletrain.ensemble.members import member_dir, train_member
from scaletrain.fileio import atomic_path
from scaletrain.train.precision import Precision
from scaletrain.trained.files import read_spec
from scaletrain.trained.inference import device_of, predict_tensors
from scaletrain.trained.weights import load_trained_model

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


def samme_predict(member_labels: np.ndarray, alphas: np.ndarray, *, num_classes: int):
    """The boosted label per sample: argmax over classes of the summed alphas of the members
    voting for it; member_labels (M, N)."""
    scores = np.zeros((member_labels.shape[1], num_classes))
    for labels, alpha in zip(member_labels, alphas, strict=True):
        scores[np.arange(len(labels)), labels] += alpha
    return scores.argmax(axis=1)


@dataclass(frozen=True)
class BoostingResult:
    outcomes: list  # MemberOutcome per round trained (fewer than K when stopped)
    alphas: list[float]  # each finished member's weight in the vote (0: no better than chance)


def train_rounds(members: list[Config], bundle: DataBundle) -> BoostingResult:
    """Round r writes its sample weights, brings member r to its end (trained, resumed or
    kept, as other ensembles do) on rows drawn by them, then scores it on the whole train
    split. A resumed ensemble recomputes the same weights from its finished members."""
    num_rows = len(bundle.train)
    weights = np.full(num_rows, 1.0 / num_rows)
    outcomes, alphas = [], []
    for index, member_cfg in enumerate(members):
        _save_weights(Path(member_cfg.data.subsample.weights_file), weights)
        outcome = train_member(member_cfg, index)
        outcomes.append(outcome)
        if outcome.exit_code:  # stopped by a signal: resume goes on from this round
            break
        correct = _correct_rows(member_cfg, bundle)
        round_ = samme_round(weights, correct, num_classes=bundle.spec.num_outputs)
        alphas.append(max(round_.alpha, 0.0))
        if is_better_than_chance(round_):  # else: no vote, and the weights stay as they were
            weights = round_.weights
    return BoostingResult(outcomes, alphas)


def _save_weights(path: Path, weights: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, weights, allow_pickle=False)
    with atomic_path(path) as temporary:
        temporary.write_bytes(buffer.getvalue())


def _correct_rows(member_cfg: Config, bundle: DataBundle) -> np.ndarray:
    """Which train-split rows member's best weights label correctly."""
    run = member_dir(member_cfg)
    model, _ = load_trained_model(run, member_cfg, read_spec(run), checkpoint="best", model=None)
    probabilities = predict_tensors(
        model,
        bundle.train.inputs,
        spec=bundle.spec,
        precision=Precision.from_config(member_cfg.train.precision, device_of(model)),
    )
    return (probabilities.argmax(1) == bundle.train.targets.long()).numpy()
