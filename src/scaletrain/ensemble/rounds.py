"""Boosting's rounds, one after another (round r depends on round r-1's mistakes, so
`--nproc` does not apply): each brings its member to its end (trained, resumed or kept, as
other ensembles do), then scores it on the whole train split for the next round.

Classification: round r's SAMME (or SAMME.R) sample weights go to `RUN/boosting/round_r.npy`,
which member r feeds to its loss (`ensemble.boosting.weights: loss`) or draws its rows by
(`resample`). Regression: round r >= 1 fits what the rounds before left,
`RUN/boosting/residuals_r.safetensors` (train/val/test targets minus F_{r-1}, standardized).
A resumed ensemble recomputes every file from its finished members (same checkpoints, same
numbers).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from scaletrain.config import Config
from scaletrain.data import DataBundle, Split
from scaletrain.ensemble.boosting import (
    is_better_than_chance,
    samme_r_round,
    samme_round,
    stage_weight,
)
from scaletrain.ensemble.jobs import MemberJobs, run_member_jobs
from scaletrain.ensemble.members import member_dir, train_member
from scaletrain.ensemble.user_parts import UserParts
from scaletrain.fileio import atomic_path
from scaletrain.train.precision import run_precision
from scaletrain.trained.files import read_spec
from scaletrain.trained.inference import device_of, predict_tensors
from scaletrain.trained.weights import load_trained_model

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class BoostingResult:
    outcomes: list  # MemberOutcome per round trained (fewer than K when stopped)
    alphas: list[float]  # each finished member's weight (SAMME: 0 = no better than chance)
    history: list[dict] = field(default_factory=list)  # per round: its error or train MSE


def train_rounds(
    members: list[Config],
    bundle: DataBundle,
    cfg: Config,
    user: UserParts | None = None,
    *,
    jobs: MemberJobs | None = None,
) -> BoostingResult:
    """Every round of `cfg.ensemble.boosting` for the data's task; `jobs`: each round a
    multi-process job (`ensemble.member_nproc`), one at a time."""
    rounds = _Rounds(members, bundle, user, jobs)
    if bundle.spec.task == "classification":
        return _classification_rounds(rounds, cfg.ensemble.boosting.algorithm)
    return _regression_rounds(rounds, cfg.ensemble.boosting.learning_rate)


@dataclass(frozen=True)
class _Rounds:
    members: list[Config]
    bundle: DataBundle
    user: UserParts | None  # the Python API's model factory and data, if given
    jobs: MemberJobs | None = None  # members as multi-process jobs

    def train(self, index: int):
        if self.jobs is not None:
            return run_member_jobs(self.jobs, self.members, [index])[0]
        return train_member(self.members[index], index, self.user)

    def outputs(self, index: int, split: Split) -> torch.Tensor:
        """Member `index`'s best weights on a split: probabilities, or values in standardized
        units (the units its targets, and the residuals, are in)."""
        member_cfg = self.members[index]
        run = member_dir(member_cfg)
        spec = read_spec(run)
        fresh = self.user.new_model() if self.user is not None else None
        model, _ = load_trained_model(run, member_cfg, spec, checkpoint="best", model=fresh)
        inputs = split.inputs if split.transform is None else split.transform(split.inputs)
        return predict_tensors(
            model,
            inputs,
            spec=spec,
            precision=run_precision(
                member_cfg.train.precision,
                device_of(model),
                model=model,
                spec=spec,
                batch_size=member_cfg.train.batch_size,
            ),
        )


def _classification_rounds(rounds: _Rounds, algorithm: str):
    members, bundle = rounds.members, rounds.bundle
    num_rows = len(bundle.train)
    weights = np.full(num_rows, 1.0 / num_rows)
    labels = bundle.train.targets.long().numpy()
    outcomes, alphas, history = [], [], []
    for index, member_cfg in enumerate(members):
        _save_weights(Path(member_cfg.data.subsample.weights_file), weights)
        outcome = rounds.train(index)
        outcomes.append(outcome)
        if outcome.exit_code:  # stopped by a signal: resume goes on from this round
            break
        probabilities = rounds.outputs(index, bundle.train).numpy()
        if algorithm == "samme_r":
            round_ = samme_r_round(weights, probabilities, labels)
        else:
            correct = probabilities.argmax(1) == labels
            round_ = samme_round(weights, correct, num_classes=bundle.spec.num_outputs)
        history.append({"round": index, "error": round(round_.error, 6)})
        alphas.append(max(round_.alpha, 0.0))
        if is_better_than_chance(round_):  # else: no vote, and the weights stay as they were
            weights = round_.weights
    return BoostingResult(outcomes, alphas, history)


def _regression_rounds(rounds: _Rounds, learning_rate: float):
    """F_0 = h_0, F_r = F_{r-1} + learning_rate * gamma_r * h_r, each h_r fit to y - F_{r-1}
    (MSE), gamma_r its line search on the train rows."""
    members, bundle = rounds.members, rounds.bundle
    splits = {name: getattr(bundle, name) for name in SPLITS if getattr(bundle, name) is not None}
    boosted = {name: torch.zeros_like(split.targets.float()) for name, split in splits.items()}
    outcomes, weights, history = [], [], []
    for index, member_cfg in enumerate(members):
        residuals = {name: s.targets.float() - boosted[name] for name, s in splits.items()}
        if index:  # round 0 fits the targets themselves
            save_residuals(Path(member_cfg.data.subsample.residuals_file), residuals)
        outcome = rounds.train(index)
        outcomes.append(outcome)
        if outcome.exit_code:
            break
        stages = {
            name: rounds.outputs(index, split).reshape(split.targets.shape)
            for name, split in splits.items()
        }
        weight = 1.0
        if index:
            weight = stage_weight(residuals["train"], stages["train"], learning_rate=learning_rate)
        weights.append(weight)
        boosted = {name: boosted[name] + weight * stages[name] for name in splits}
        train_mse = (bundle.train.targets.float() - boosted["train"]).square().mean()
        history.append({"round": index, "weight": weight, "train_mse": float(train_mse)})
    return BoostingResult(outcomes, weights, history)


def save_residuals(path: Path, residuals: dict[str, torch.Tensor]) -> None:
    """The targets a regression round fits, per split (safetensors: no pickle)."""
    from safetensors.torch import save

    tensors = {name: value.contiguous().float() for name, value in residuals.items()}
    with atomic_path(path) as temporary:
        temporary.write_bytes(save(tensors))


def _save_weights(path: Path, weights: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, weights, allow_pickle=False)
    with atomic_path(path) as temporary:
        temporary.write_bytes(buffer.getvalue())
