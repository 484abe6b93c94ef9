"""`scaletrain.train` and `scaletrain.resume`: one run, or an ensemble where the config has
an `ensemble` section (api.py sits below this package and trains one run only)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from scaletrain import api
from scaletrain.config import Config, load_config
from scaletrain.ensemble.runner import resume_ensemble, train_ensemble
from scaletrain.ensemble.user_parts import user_parts
from scaletrain.errors import UserError
from scaletrain.rundir import is_ensemble_dir
from scaletrain.trained import Run


def train(
    config: str | Path | dict | Config,
    *,
    model: nn.Module | None = None,
    data: dict | None = None,
    overrides: list[str] = (),
    overwrite: bool = False,
    callbacks: list = (),
    nproc: int = 1,
) -> Run:
    """Train from a config (YAML path, dict or Config); an ensemble where it has one.

    Args:
        config: the run's configuration.
        model: any ``nn.Module`` to train instead of the config's registry model.
        data: ``{"train": Dataset | (X, y), "val": ..., "test": ...}`` instead of ``data.source``.
        overrides: dotted ``KEY=VALUE`` strings applied on top of ``config``.
        overwrite: replace an existing run directory of the same name.
        callbacks: objects with any of the ``train.callbacks`` events.
        nproc: ensembles only: processes for the members, each in its own process (or,
            with ``ensemble.member_nproc: M``, nproc / M members at once, M processes each).

    An ensemble takes ``model`` as a factory (``model=lambda: MyNet()``: one fresh module per
    member) and ``data`` as for one run; its members then train in this process.
    """
    cfg = load_config(config, list(overrides))
    if cfg.ensemble is None:
        return api.train(cfg, model=model, data=data, overwrite=overwrite, callbacks=callbacks)
    if callbacks:
        raise UserError(
            "ensemble: callbacks given to train() are not supported for ensembles yet (each "
            "member is its own run); remove them or the ensemble section"
        )
    user = user_parts(model, data, nproc=nproc)
    return train_ensemble(cfg, overwrite=overwrite, nproc=nproc, user=user)


def resume(
    run_dir: str | Path,
    *,
    model: nn.Module | None = None,
    data: dict | None = None,
    overrides: list[str] = (),
    nproc: int = 1,
) -> Run:
    """Continue an interrupted run or ensemble (finished members are kept), as ``api.resume``."""
    if not is_ensemble_dir(Path(run_dir)):
        return api.resume(run_dir, model=model, data=data, overrides=overrides)
    if overrides:
        raise UserError(f"{run_dir}: an ensemble resumes as it was configured (no overrides)")
    return resume_ensemble(run_dir, nproc=nproc, user=user_parts(model, data, nproc=nproc))
