"""`scaletrain export` of an ensemble: every member's weights in one safetensors file, under
the names of `EnsembleModule`'s state dict (`members.{i}.…`, the combination `weights`, a stacking `combiner.…`),
so `load_run(RUN).model.load_state_dict(load_file(path))` takes it as it is. No pickle."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from scaletrain.checkpoint import CheckpointStore
from scaletrain.checkpoint.export import read_full_tensors
from scaletrain.config import load_run_config
from scaletrain.fileio import atomic_path
from scaletrain.rundir import open_run_dir
from scaletrain.trained.combiner import COMBINER_FILE
from scaletrain.trained.ensemble import (
    combination_buffer,
    combination_weights,
    member_checkpoints,
    module_combine,
)
from scaletrain.trained.files import read_spec, run_config_text

FORMAT = "scaletrain-ensemble-weights"


def export_ensemble(run_dir: str | Path, *, out: str | Path | None = None, checkpoint="best"):
    """Write the members' `checkpoint` weights to `out` (default `RUN/model.safetensors`)."""
    from safetensors.torch import load_file, save_file

    run = open_run_dir(run_dir)
    cfg = load_run_config(run.config)
    tensors, steps = {}, []
    members = member_checkpoints(run.root, checkpoint)
    for index, (member, member_checkpoint) in enumerate(members):
        path = CheckpointStore(member.checkpoints).find(member_checkpoint)  # manifest-checked
        steps.append(int(path.name.removeprefix("step_")))
        for name, value in read_full_tensors(path).items():
            tensors[f"members.{index}.{name}"] = value.contiguous()
    count = len(members)
    weighted = cfg.ensemble.combine == "weighted" or cfg.ensemble.method == "boosting"
    weights = combination_weights(run.root) if weighted else None
    weights = torch.tensor(weights if weights is not None else [1.0] * count)
    # as the module holds them: gradient boosting's stage weights unnormalized (a sum)
    tensors["weights"] = combination_buffer(weights, module_combine(cfg, read_spec(run).task))
    if cfg.ensemble.combine == "learned":  # stacking: the combiner's own weights
        for name, value in load_file(str(run.root / COMBINER_FILE)).items():
            tensors[f"combiner.{name}"] = value
    metadata = {
        "format": FORMAT,
        "config": run_config_text(run),
        "combine": cfg.ensemble.combine,
        "checkpoint": checkpoint,
        "member_steps": json.dumps(steps),
    }
    target = Path(out) if out else run.root / "model.safetensors"
    with atomic_path(target) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
    return target
