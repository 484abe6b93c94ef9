"""Every member and the ensemble on val and test, and how much the members disagree."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from scaletrain.config import Config
from scaletrain.data import DataBundle, Split
from scaletrain.train.precision import run_precision
from scaletrain.trained.inference import device_of, evaluate_on, predict_tensors

SPLITS = ("val", "test")


@dataclass(frozen=True)
class EnsembleMetrics:
    members: list[dict]  # per member: split -> metrics, as a single run reports them
    ensemble: dict  # split -> metrics of the combined module
    mean_member: dict  # split -> each metric averaged over the members
    diversity: dict  # split -> disagreement (mean over pairs) and the agreement matrix

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def evaluate_ensemble(
    module: nn.Module, member_cfgs: list[Config], cfg: Config, bundle: DataBundle
) -> EnsembleMetrics:
    """Metrics of each member (its own loss and precision) and of `module`, their combination."""
    members = list(module.members)
    splits = {name: getattr(bundle, name) for name in SPLITS if getattr(bundle, name) is not None}
    member_metrics = [
        {name: _metrics(model, split, member_cfg, bundle) for name, split in splits.items()}
        for model, member_cfg in zip(members, member_cfgs, strict=True)
    ]
    ensemble = {name: _metrics(module, split, cfg, bundle) for name, split in splits.items()}
    diversity = {
        name: diversity_of(_outputs(members, member_cfgs, split, bundle), task=bundle.spec.task)
        for name, split in splits.items()
        if split.inputs is not None  # a Dataset split is evaluated, not held for diversity
    }
    return EnsembleMetrics(member_metrics, ensemble, _mean(member_metrics), diversity)


def _metrics(model: nn.Module, split: Split, cfg: Config, bundle: DataBundle) -> dict:
    return evaluate_on(
        model,
        split,
        cfg=cfg,
        spec=bundle.spec,
        batch_size=256,
        inverse_target=bundle.preprocessor.inverse_target,
    )


def _outputs(members, member_cfgs, split: Split, bundle: DataBundle) -> list[torch.Tensor]:
    """Each member's probabilities (classification) or values (regression) on the split."""
    return [
        predict_tensors(
            model,
            split.inputs,
            spec=bundle.spec,
            precision=run_precision(
                member_cfg.train.precision,
                device_of(model),
                model=model,
                spec=bundle.spec,
                batch_size=member_cfg.train.batch_size,
            ),
            inverse_target=bundle.preprocessor.inverse_target,
        )
        for model, member_cfg in zip(members, member_cfgs, strict=True)
    ]


def diversity_of(outputs: list[torch.Tensor], *, task: str) -> dict:
    """Classification: the share of samples two members label differently, per pair (the
    agreement matrix holds 1 - that). Regression: the mean absolute difference per pair."""
    count = len(outputs)
    matrix = np.eye(count) if task == "classification" else np.zeros((count, count))
    for first, second in itertools.combinations(range(count), 2):
        if task == "classification":
            value = (outputs[first].argmax(1) == outputs[second].argmax(1)).double().mean()
        else:
            value = (outputs[first] - outputs[second]).abs().double().mean()
        matrix[first, second] = matrix[second, first] = float(value)
    pairs = [matrix[a, b] for a, b in itertools.combinations(range(count), 2)]
    if task == "classification":
        mean = 1 - float(np.mean(pairs)) if pairs else 0.0
        return {"disagreement": mean, "agreement_matrix": matrix.round(6).tolist()}
    mean = float(np.mean(pairs)) if pairs else 0.0
    return {"mean_abs_difference": mean, "difference_matrix": matrix.round(6).tolist()}


def _mean(member_metrics: list[dict]) -> dict:
    """Each split's metrics averaged over the members (what the ensemble should beat)."""
    result = {}
    for split in member_metrics[0]:
        keys = [k for k, v in member_metrics[0][split].items() if isinstance(v, int | float)]
        result[split] = {
            key: float(np.mean([member[split][key] for member in member_metrics])) for key in keys
        }
    return result
