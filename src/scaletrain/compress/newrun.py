"""The compressed run's directory: built under a staging name beside the target (fine-tuned
through `scaletrain.api.train`, or written directly), renamed into place only when whole."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch
from torch import nn

from scaletrain.checkpoint import CheckpointStore
from scaletrain.checkpoint.state_dict import full_model_state, model_state
from scaletrain.config import Config, load_config
from scaletrain.errors import UserError
from scaletrain.fileio import atomic_write_json, atomic_write_text
from scaletrain.parallel import SingleStrategy
from scaletrain.rundir import RunDir

FINETUNE_LR_FACTOR = 0.1  # of the source run's optim.lr; an `optim.lr=` override wins


def check_target(out: Path, *, overwrite: bool) -> None:
    """Refuse an existing output unless told to replace a run directory."""
    if out.exists() and not overwrite:
        raise UserError(f"--out: {out} already exists; pass --overwrite to replace it")
    if out.exists() and not (out / "config.yaml").is_file():
        raise UserError(f"--out: refusing to overwrite {out}: it is not a run directory")


def staging_dir(out: Path, round_index: int) -> Path:
    """Where one round (a fine-tuning run, or the direct write) builds its directory."""
    return out.parent / f"{out.name}.compressing-{round_index}"


def run_config(cfg: Config, model_cfg, *, root: Path, overrides=(), epochs=None) -> Config:
    """The source config with the compressed model's widths, named after `root` (and, where
    it trains, the fine-tuning epochs, a tenth of the learning rate and the user overrides)."""
    raw = cfg.to_dict()
    raw["run"].update(name=root.name, out_dir=str(root.parent))
    raw["model"] = model_cfg.model_dump()
    if epochs is not None:  # fine-tuning: near the optimum already, so a gentler step
        raw["train"].update(max_epochs=epochs, max_steps=None)
        raw["optim"]["lr"] = raw["optim"]["lr"] * FINETUNE_LR_FACTOR
    return load_config(raw, list(overrides))


def finetune(model: nn.Module, cfg: Config, *, root: Path, callbacks: list) -> nn.Module:
    """Train `model` (its weights as they are) with `cfg` as a normal run in `root`."""
    from scaletrain import api

    plain = copy.deepcopy(model).cpu()  # the trained one may be sharded (fsdp) in place
    run = api.train(cfg, model=model, callbacks=callbacks)
    run.wait()  # report.html is drawn in the background: the directory moves next
    if run.status == "interrupted":  # SIGINT/SIGTERM stopped it: publish nothing half-tuned
        raise KeyboardInterrupt
    plain.load_state_dict(full_model_state(run.model))
    # training may leave conv weights channels_last; the loaded model is contiguous
    return plain.to(memory_format=torch.contiguous_format)


def write_direct(root: Path, cfg: Config, model: nn.Module, *, source: RunDir, step: int) -> None:
    """A run directory holding `model`'s weights as one checkpoint, without training."""
    run = RunDir(root)
    root.mkdir(parents=True)
    atomic_write_text(run.config, cfg.to_yaml())
    for name in ("data_spec.json", "preprocess.json"):
        shutil.copyfile(source.root / name, root / name)
    strategy = SingleStrategy(torch.device("cpu"))
    CheckpointStore(run.checkpoints).save(
        step=step, tensors={"model": model_state(model)}, side_state={}, strategy=strategy
    )


def write_summary(root: Path, *, task: str, metrics: dict, step: int, status: str) -> None:
    """summary.json as `load_run` reads it: the metrics of the weights at `step`."""
    atomic_write_json(
        RunDir(root).summary,
        {
            "status": status,
            "name": root.name,
            "task": task,
            "steps": step,
            "metrics": metrics,
            "weights": {"name": "last", "step": step},
        },
    )


def publish(staging: Path, out: Path, cfg: Config, *, overwrite: bool) -> None:
    """Name the finished directory `out` (its config.yaml too), replacing an old one if asked."""
    run = RunDir(staging)
    atomic_write_text(run.config, cfg.to_yaml())
    summary = json.loads(run.summary.read_text())
    atomic_write_json(run.summary, {**summary, "name": out.name})
    if out.exists():
        check_target(out, overwrite=overwrite)
        shutil.rmtree(out)
    staging.rename(out)


def discard(*roots: Path) -> None:
    """Remove staging directories (a failed or superseded round)."""
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)
