"""The `ensemble` section (absent: one model) and `data.subsample`, the train-split sample a
bagging member trains on."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from scaletrain.config.base import Float, PositiveInt, Section, Seed

ShareOfSamples = Annotated[Float, Field(gt=0, le=1)]
MAX_MEMBERS = 256  # each member is a run directory; more is a mistake, not an ensemble

# Methods the trainer runs today; the others are named so a config can say what it wants and
# be told, in one line, that it is not there yet (docs/ensembles.md).
IMPLEMENTED_METHODS = ("bagging", "voting", "snapshot", "stacking", "boosting")
# Keys a member may not change: members share the data split and its preprocessing (one
# `preprocess.json` serves the ensemble), and their place in the ensemble's directory.
FIXED_FOR_MEMBERS = ("data", "run", "ensemble")


class SubsampleConfig(Section):
    fraction: ShareOfSamples = Field(
        1.0, description="Share of the train split drawn (val/test are never touched)."
    )
    replacement: bool = Field(
        True, description="Draw with replacement (a bootstrap sample) or without."
    )
    seed: Seed = Field(0, description="Seed of the draw: the same seed gives the same indices.")
    holdout: Annotated[Float, Field(ge=0, lt=1)] = Field(
        0.0,
        description="Share of the train split left out before the draw (a stacking "
        "combiner's rows, the same for every member: `holdout_seed`).",
    )
    holdout_seed: Seed = Field(0, description="Seed of the held-out rows.")
    weights_file: str | None = Field(
        None,
        description="boosting: a .npy of one weight per train-split row; the rows are drawn "
        "with replacement in proportion to them (`seed`), or weigh each row's loss "
        "(`weights_use`).",
    )
    weights_use: Literal["draw", "loss"] = Field(
        "draw",
        description="boosting: `draw` rows in proportion to `weights_file`, or `loss`: every "
        "row once, its cross-entropy term weighted (weights rescaled to mean 1).",
    )
    residuals_file: str | None = Field(
        None,
        description="gradient boosting: a safetensors file of `train`/`val`/`test` targets "
        "(standardized units) replacing the split's own: the residuals this round fits.",
    )


class BoostingConfig(Section):
    weights: Literal["loss", "resample"] = Field(
        "loss",
        description="classification: feed the sample weights to the loss (every train row, "
        "each weighted), or `resample`: train on rows drawn in proportion to them.",
    )
    algorithm: Literal["samme", "samme_r"] = Field(
        "samme",
        description="classification: `samme` (members' labels, alpha-weighted vote) or "
        "`samme_r` (members' probabilities, summed log-probability terms; Zhu et al. 2009).",
    )
    learning_rate: Annotated[Float, Field(gt=0, le=1)] = Field(
        0.5,
        description="regression (gradient boosting on residuals): the shrinkage of rounds "
        "1..K-1; F_r = F_(r-1) + learning_rate * h_r, round 0 at full weight.",
    )


class EnsembleConfig(Section):
    method: Literal["bagging", "voting", "snapshot", "stacking", "boosting"] = Field(
        "voting",
        description="`bagging`: each member on its own bootstrap sample of the train split; "
        "`voting`: same data, different seeds; `snapshot`: one run, `members` cosine cycles, a "
        "member at each cycle's end; `stacking`: members on the train split less a held-out share "
        "(`combiner_fraction`), a combiner trained on their predictions for it; `boosting`: "
        "SAMME rounds, one member each, sequential (classification).",
    )
    members: PositiveInt = Field(5, description="Number of members K (each a run directory).")
    combine: Literal["mean", "vote", "weighted", "learned", "boosted"] = Field(
        "mean",
        description="`mean` of probabilities (classification) or values (regression); `vote`: "
        "majority of predicted classes; `weighted`: mean weighted by 1 / member val loss; "
        "`learned`: the stacking combiner (the default and only choice for stacking); "
        "`boosted`: boosting's own (SAMME vote, SAMME.R sum, shrunken sum of residual fits).",
    )
    combiner: Literal["linear", "mlp"] = Field(
        "linear",
        description="stacking: the combiner over the members' log-probabilities (or values); "
        "`linear` starts at their mean, `mlp` has one hidden layer of 32.",
    )
    combiner_fraction: Annotated[Float, Field(gt=0, le=0.5)] = Field(
        0.2,
        description="stacking: share of the train split no member trains on; the combiner "
        "learns from the members' predictions on it (out-of-sample for every member).",
    )
    sample_fraction: ShareOfSamples = Field(
        1.0, description="bagging: share of the train split each member draws."
    )
    replacement: bool = Field(
        True, description="bagging: draw with replacement (bootstrap) or without (subsampling)."
    )
    member_overrides: list[list[str]] = Field(
        [],
        description="Per member, dotted `KEY=VALUE` overrides (`[[model.hidden=[64]], "
        "[train.max_epochs=5]]`); members past the list get none; `data.*` and `run.*` are fixed.",
    )
    member_nproc: PositiveInt = Field(
        1,
        description="Processes per member: > 1 makes each member a `scaletrain train --nproc M` "
        "job of its own (its `parallel.strategy`: ddp, fsdp, ...); `--nproc P` then runs P / M "
        "members at once (P a multiple of M).",
    )
    boosting: BoostingConfig = Field(
        BoostingConfig(), description="method boosting: how rounds weigh rows and combine."
    )

    @model_validator(mode="before")
    @classmethod
    def _stacking_combines_by_learning(cls, data):
        """`method: stacking` alone means its combiner (`combine: learned`), `boosting` its own
        combination (`combine: boosted`)."""
        implied = {"stacking": "learned", "boosting": "boosted"}
        if isinstance(data, dict) and data.get("method") in implied and "combine" not in data:
            return {**data, "combine": implied[data["method"]]}
        return data

    @model_validator(mode="after")
    def _check(self) -> EnsembleConfig:
        if self.members > MAX_MEMBERS:
            raise ValueError(f"ensemble.members: at most {MAX_MEMBERS}, got {self.members}")
        if self.method not in IMPLEMENTED_METHODS:
            raise ValueError(
                f"ensemble.method: `{self.method}` is not implemented yet; use one of "
                f"{', '.join(IMPLEMENTED_METHODS)}"
            )
        if (self.combine == "learned") != (self.method == "stacking"):
            raise ValueError(
                f"ensemble.combine: `{self.combine}` with ensemble.method `{self.method}`; "
                "`learned` is the stacking combiner and stacking combines by it only: use "
                "method stacking with combine learned, or another method with mean, vote or "
                "weighted"
            )
        if (self.method == "boosting") != (self.combine == "boosted") and self.combine != "vote":
            raise ValueError(
                f"ensemble.combine: `{self.combine}` with ensemble.method `{self.method}`; "
                "boosting combines its own way and only so: use method boosting with combine "
                "boosted, or another method with mean, vote or weighted"
            )
        # by value, not by fields set: a config read back from config.yaml lists every key
        if self.method != "boosting" and self.boosting != BoostingConfig():
            raise ValueError(
                f"ensemble.boosting: set, but ensemble.method is `{self.method}`; remove it or "
                "use method boosting"
            )
        if self.method == "snapshot" and self.combine == "weighted":
            raise ValueError(
                "ensemble.combine: `weighted` weighs members by their own validation loss; a "
                "snapshot ensemble's members share one run: use mean or vote"
            )
        if len(self.member_overrides) > self.members:
            raise ValueError(
                f"ensemble.member_overrides: {len(self.member_overrides)} lists for "
                f"ensemble.members={self.members}; give at most one list per member"
            )
        self._check_override_keys()
        return self

    def _check_override_keys(self) -> None:
        for index, items in enumerate(self.member_overrides):
            for item in items:
                key, equals, _ = item.partition("=")
                if not equals or not key:
                    raise ValueError(
                        f"ensemble.member_overrides.{index}: expected KEY=VALUE, got {item!r}"
                    )
                if key.split(".")[0] in FIXED_FOR_MEMBERS:
                    raise ValueError(
                        f"ensemble.member_overrides.{index}: {key} is shared by all members "
                        f"({', '.join(k + '.*' for k in FIXED_FOR_MEMBERS)} are fixed); set it "
                        "for the whole ensemble instead"
                    )


def num_runs(ensemble: EnsembleConfig) -> int:
    """Runs to train: one per member, or one run whose cycle ends are the members (snapshot)."""
    return 1 if ensemble.method == "snapshot" else ensemble.members


def check_snapshot(raw_train: dict, ensemble: EnsembleConfig) -> None:
    """A snapshot ensemble's cycles end on epoch ends, where a checkpoint is saved."""
    epochs, members = raw_train.get("max_epochs"), ensemble.members
    if raw_train.get("max_steps") is not None or not epochs or epochs % members:
        raise ValueError(
            f"ensemble.method: `snapshot` cuts train.max_epochs into {members} equal cycles "
            f"(ensemble.members); set train.max_epochs to a multiple of {members} (got "
            f"{epochs}) and leave train.max_steps unset"
        )
    if ensemble.member_overrides:
        raise ValueError(
            "ensemble.member_overrides: a snapshot ensemble is one run; set its keys directly"
        )


# A member job of several processes trains under the strategy its config names: `single` is
# one process by definition, and async_ps starts its servers and spares under its own
# supervisor, which member jobs have not been tried with.
MEMBER_JOB_STRATEGIES = ("ddp", "fsdp", "auto", "local_sgd", "diloco", "pp")


def check_member_strategy(strategy: str, member_nproc: int, *, key: str) -> None:
    """`ensemble.member_nproc` > 1 needs a strategy that trains on several processes."""
    if member_nproc > 1 and strategy not in MEMBER_JOB_STRATEGIES:
        raise ValueError(
            f"{key}: `{strategy}` with ensemble.member_nproc {member_nproc}; each member is a "
            f"{member_nproc}-process job: use one of {', '.join(MEMBER_JOB_STRATEGIES)}, or "
            "member_nproc 1"
        )


def check_member_batch(member, member_nproc: int) -> None:
    """A member job of `member_nproc` replicas splits `train.batch_size` among them: refused
    at config time (not when the job starts) where it does not divide. Meshes (dims, pp)
    divide the processes otherwise and are left to the job's own plan."""
    parallel = member.parallel
    if member_nproc == 1 or parallel.strategy == "pp" or not parallel.dims.is_default():
        return
    if member.train.batch_size % member_nproc:
        raise ValueError(
            f"train.batch_size: {member.train.batch_size} is not divisible by "
            f"ensemble.member_nproc {member_nproc} (each member's batch is split over its "
            "processes)"
        )


def check_row_weights(cfg) -> None:
    """`data.subsample.weights_use: loss` (a boosting round's weighted cross-entropy) refused,
    before any file, where the step could not honour it."""
    subsample = cfg.data.subsample
    if subsample is None or subsample.weights_use != "loss" or subsample.weights_file is None:
        return
    key = "data.subsample.weights_use: `loss`"
    if cfg.parallel.strategy == "pp" or cfg.parallel.dims.pp > 1:
        raise ValueError(f"{key} needs the step's own forward; a pipeline sees no row ids")
    if cfg.distill is not None:
        raise ValueError(f"{key} and distill: the teacher's loss cannot also weigh rows")
    if cfg.loss.name not in ("auto", "cross_entropy") or cfg.data.task in (
        "regression",
        "language_model",
    ):
        raise ValueError(f"{key} weighs a classification cross-entropy; use `draw`")
    if cfg.loss.class_weights != "none":
        raise ValueError(
            f"{key}: the rows carry boosting's weights; set loss.class_weights to `none`"
        )


def member_seed(seed: int, index: int) -> int:
    """Member `index`'s run seed: member 0 is the ensemble's own seed."""
    return (seed + index) % 2**32


def member_raw(raw: dict, index: int) -> dict:
    """Member `index`'s config as a dict (before its overrides): a normal run inside the
    ensemble's directory, its own seed, the ensemble's data split, and for bagging its own
    sample of the train split."""
    ensemble, run, data = raw["ensemble"], raw["run"], raw["data"]
    seed = member_seed(run["seed"], index)
    member_data = {
        **data,
        "split_seed": run["seed"] if data.get("split_seed") is None else data["split_seed"],
    }
    if ensemble["method"] == "snapshot":
        return _snapshot_raw(raw, ensemble, member_data, run)
    if ensemble["method"] == "stacking":  # every member leaves out the combiner's rows
        member_data["subsample"] = {
            "fraction": 1.0,
            "replacement": False,
            "seed": seed,
            "holdout": ensemble["combiner_fraction"],
            "holdout_seed": member_data["split_seed"],
        }
    if ensemble["method"] == "boosting":
        member_data["subsample"] = _boosting_subsample(ensemble, data, run, index, seed)
    if ensemble["method"] == "bagging":
        member_data["subsample"] = {
            "fraction": ensemble["sample_fraction"],
            "replacement": ensemble["replacement"],
            "seed": seed,
        }
    member_run = {
        **run,
        "name": f"m{index}",
        "seed": seed,
        "out_dir": f"{run['out_dir']}/{run['name']}/members",
    }
    return {**raw, "ensemble": None, "run": member_run, "data": member_data}


def _boosting_subsample(ensemble: dict, data: dict, run: dict, index: int, seed: int) -> dict:
    """A boosting round's rows: classification draws them by (or weighs their loss with) its
    SAMME weights; regression rounds after the first fit the residuals left so far."""
    folder = f"{run['out_dir']}/{run['name']}/boosting"
    if data.get("task") == "regression":  # known once the ensemble resolved its data task
        residuals = f"{folder}/residuals_{index}.safetensors" if index else None
        return {"fraction": 1.0, "replacement": False, "seed": seed, "residuals_file": residuals}
    uses_loss = ensemble["boosting"]["weights"] == "loss"
    return {
        "fraction": 1.0,
        "replacement": True,
        "seed": seed,
        "weights_file": f"{folder}/round_{index}.npy",
        "weights_use": "loss" if uses_loss else "draw",
    }


def member_overrides(ensemble: EnsembleConfig, index: int) -> list[str]:
    """The dotted overrides member `index` gets (none past the list)."""
    items = ensemble.member_overrides
    return list(items[index]) if index < len(items) else []


def _snapshot_raw(raw: dict, ensemble: dict, data: dict, run: dict) -> dict:
    """The one run of a snapshot ensemble: a cosine restart per member, a checkpoint at each
    cycle's end and no other (those checkpoints are the members)."""
    members = ensemble["members"]
    cycle_epochs = raw["train"]["max_epochs"] // members
    schedule = {**raw["optim"]["schedule"], "name": "cosine_restarts", "cycles": members}
    checkpoint = {
        **raw["checkpoint"],
        "every_steps": None,
        "every_epochs": cycle_epochs,
        "every_minutes": None,
        "keep_last": members,
        "save_best": False,
    }
    return {
        **raw,
        "ensemble": None,
        "run": {**run, "name": "m0", "out_dir": f"{run['out_dir']}/{run['name']}/members"},
        "data": data,
        "optim": {**raw["optim"], "schedule": schedule},
        "checkpoint": checkpoint,
    }
