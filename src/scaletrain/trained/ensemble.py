"""An ensemble run as one `Run`: its members' networks combined in one `nn.Module`.

The combined module returns what a single network's head would, so everything built for one
run (predict, evaluate, the loss) works unchanged: for classification the log of the combined
class probabilities (softmax gives them back exactly, cross-entropy is their NLL), for
regression the combined values.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from scaletrain.config import Config, load_run_config
from scaletrain.errors import UserError
from scaletrain.rundir import ENSEMBLE_FILE, RunDir, read_json
from scaletrain.trained.combiner import load_combiner, stack_features
from scaletrain.trained.files import read_preprocessor, read_spec
from scaletrain.trained.handle import Run
from scaletrain.trained.weights import load_trained_model

_FLOOR = 1e-12  # a class no member predicts: log(0) would make the loss infinite
# SAMME.R takes log p: probabilities are clipped at float32's resolution (log -15.9), as
# scikit-learn clips at float64's, so one confidently wrong row cannot take all the weight
PROBABILITY_FLOOR = float(torch.finfo(torch.float32).eps)


class EnsembleModule(nn.Module):
    """Members' outputs combined: mean (or weighted mean) of probabilities or values, the
    share of members voting for each class, a stacking combiner over them (`learned`), the
    SAMME.R sum (`samme_r`), or gradient boosting's weighted sum of values (`sum`)."""

    def __init__(
        self, members: list[nn.Module], *, task: str, combine: str, weights=None, combiner=None
    ):
        super().__init__()
        assert (combiner is not None) == (combine == "learned")
        self.members = nn.ModuleList(members)
        self.combiner = combiner
        self.task = task
        self.combine = combine
        count = len(members)
        weights = torch.full((count,), 1.0 / count) if weights is None else torch.tensor(weights)
        self.register_buffer("weights", combination_buffer(weights, combine))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        outputs = torch.stack([member(inputs).float() for member in self.members])  # (K, B, C)
        if self.combiner is not None:
            combined = self.combiner(stack_features(outputs, task=self.task)).float()
            return combined.log_softmax(dim=1) if self.task == "classification" else combined
        if self.task != "classification":
            return torch.einsum("k,kbc->bc", self.weights, outputs)
        if self.combine == "samme_r":  # argmax of sum_m h_m = argmax of sum_m log p_m
            log_p = outputs.softmax(dim=2).clamp_min(PROBABILITY_FLOOR).log()
            return log_p.mean(dim=0).log_softmax(dim=1)  # softmax(sum h / (M (K-1)))
        if self.combine == "vote":
            votes = nn.functional.one_hot(outputs.argmax(dim=2), outputs.shape[2]).float()
            probabilities = torch.einsum("k,kbc->bc", self.weights, votes)
        else:
            probabilities = torch.einsum("k,kbc->bc", self.weights, outputs.softmax(dim=2))
        return probabilities.clamp_min(_FLOOR).log()


def combination_buffer(weights: torch.Tensor, combine: str) -> torch.Tensor:
    """The members' weights as the module holds them: a sum keeps them as they are (gradient
    boosting's stage weights), every other combination normalizes them to sum 1."""
    weights = torch.as_tensor(weights).float()
    return weights if combine == "sum" else weights / weights.sum()


def module_combine(cfg: Config, task: str) -> str:
    """What the module does for `cfg.ensemble`: boosting's own combination by algorithm and
    task (an older boosting config says `vote`: SAMME), else `ensemble.combine`."""
    if cfg.ensemble.method != "boosting":
        return cfg.ensemble.combine
    if task != "classification":
        return "sum"
    return "samme_r" if cfg.ensemble.boosting.algorithm == "samme_r" else "vote"


_MEMBER_DIR = re.compile(r"^members/m[0-9]{1,3}$")
_CHECKPOINT = re.compile(r"^step_[0-9]{1,12}$")


def member_checkpoints(root: Path, checkpoint: str) -> list[tuple[RunDir, str]]:
    """Each member's run directory and checkpoint, from ensemble.json: `checkpoint` of its own
    run, or (snapshot) the checkpoint at its cycle's end. Entries are checked: a file edited to
    point outside the ensemble is one line."""
    path = Path(root) / ENSEMBLE_FILE
    record = read_json(path)
    members = record.get("members") if isinstance(record, dict) else None
    if not isinstance(members, list) or not members:
        raise UserError(f"{path}: expected a non-empty `members` list")
    found = []
    for entry in members:
        where = entry.get("dir") if isinstance(entry, dict) else None
        step = entry.get("checkpoint") if isinstance(entry, dict) else None
        if not isinstance(where, str) or not _MEMBER_DIR.match(where):
            raise UserError(f"{path}: member dir {str(where)[:40]!r} is not members/m<N>")
        if step is not None and not (isinstance(step, str) and _CHECKPOINT.match(step)):
            raise UserError(f"{path}: member checkpoint {str(step)[:40]!r} is not step_<N>")
        found.append((RunDir(Path(root) / where), step or checkpoint))
    return found


def combination_weights(root: Path) -> list[float] | None:
    """The members' weights in the combination (`weighted`), from ensemble.json."""
    record = read_json(Path(root) / ENSEMBLE_FILE)
    weights = record.get("weights") if isinstance(record, dict) else None
    if weights is not None and not (
        isinstance(weights, list) and all(isinstance(w, int | float) and w >= 0 for w in weights)
    ):
        raise UserError(f"{root / ENSEMBLE_FILE}: weights must be a list of numbers >= 0")
    return weights


def load_members(
    root: Path, *, checkpoint: str = "best", model_factory: Callable[[], nn.Module] | None = None
) -> list[nn.Module]:
    """Every member's network at its `checkpoint` (snapshot: at its cycle's end); members of
    a user module need `model_factory` (a fresh module per member)."""
    members = []
    for member, member_checkpoint in member_checkpoints(root, checkpoint):
        if not member.config.is_file():
            raise UserError(f"{member.root}: member missing; resume the ensemble to train it")
        member_cfg = load_run_config(member.config)
        fresh = model_factory() if model_factory is not None else None
        model, _ = load_trained_model(
            member, member_cfg, read_spec(member), checkpoint=member_checkpoint, model=fresh
        )
        members.append(model)
    return members


def load_ensemble_run(
    root: Path,
    cfg: Config,
    *,
    checkpoint: str = "best",
    model_factory: Callable[[], nn.Module] | None = None,
) -> Run:
    """A Run of the ensemble directory: every member's `checkpoint` weights combined."""
    run = RunDir(Path(root))
    members = load_members(run.root, checkpoint=checkpoint, model_factory=model_factory)
    spec = read_spec(run)
    combiner = None
    if cfg.ensemble.combine == "learned":
        combiner = load_combiner(
            run.root,
            cfg.ensemble.combiner,
            num_members=len(members),
            num_outputs=spec.num_outputs,
        )
    module = ensemble_module(
        members, cfg, task=spec.task, weights=combination_weights(run.root), combiner=combiner
    )
    summary = read_json(run.summary) if run.summary.is_file() else {}
    metrics = (summary.get("ensemble") or {}) if isinstance(summary, dict) else {}
    return Run(
        run.root,
        metrics,
        module.eval(),
        cfg,
        summary.get("status", "unknown") if isinstance(summary, dict) else "unknown",
        weights={"name": checkpoint, "step": 0},
        spec=spec,
        preprocessor=read_preprocessor(run),
    )


def ensemble_module(
    members: list[nn.Module], cfg: Config, *, task: str, weights=None, combiner=None
):
    """The members combined as the config's `ensemble.combine` (boosting: its own) says."""
    combine = module_combine(cfg, task)
    if combine != "weighted" and cfg.ensemble.method != "boosting":  # boosting: alphas
        weights = None
    elif weights is None:
        raise UserError(f"{cfg.run.name}: ensemble.combine={combine} but no member weights found")
    return EnsembleModule(members, task=task, combine=combine, weights=weights, combiner=combiner)
