"""Checkpoints to attack: one in today's format, and one written the way scaletrain wrote them
before metadata.json (DCP's FileSystemWriter: a pickled `.metadata`, manifest version 1)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict

from scaletrain.checkpoint import CheckpointStore, write_manifest
from scaletrain.parallel import SingleStrategy


@dataclass
class Saved:
    store: CheckpointStore
    path: Path
    model: nn.Module
    optimizer: torch.optim.Optimizer

    def fresh_tensors(self) -> dict:
        """A state dict of the same layout to load into (other values than the saved ones)."""
        model = nn.Linear(3, 2)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.5)
        model_state, optim_state = get_state_dict(model, optimizer)
        return {"model": model_state, "optim": optim_state}

    def reseal(self, *, version: int | None = None) -> None:
        """An attacker who can write the folder can also rewrite its manifest."""
        old = json.loads((self.path / "manifest.json").read_text())
        (self.path / "manifest.json").unlink()
        write_manifest(self.path, step=old["step"], version=version or old["version"])


def _trained() -> tuple[nn.Module, torch.optim.Optimizer, dict]:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    model_state, optim_state = get_state_dict(model, optimizer)
    return model, optimizer, {"model": model_state, "optim": optim_state}


@pytest.fixture
def saved(tmp_path) -> Saved:
    """A checkpoint at step 5 written by CheckpointStore (safetensors + metadata.json)."""
    model, optimizer, tensors = _trained()
    store = CheckpointStore(tmp_path / "checkpoints")
    path = store.save(
        step=5,
        tensors=tensors,
        side_state={"step": 5},
        strategy=SingleStrategy(torch.device("cpu")),
    )
    return Saved(store, path, model, optimizer)


@pytest.fixture
def legacy(tmp_path) -> Saved:
    """A checkpoint at step 5 as scaletrain wrote them before this format: DCP's default
    FileSystemWriter (pickled `.metadata`, torch.save data) and a version-1 manifest."""
    model, optimizer, tensors = _trained()
    root = tmp_path / "checkpoints"
    path = root / "step_00000005"
    path.mkdir(parents=True)
    dcp.save(tensors, storage_writer=dcp.FileSystemWriter(path))
    (path / "rank_00000.json").write_text(json.dumps({"step": 5}))
    write_manifest(path, step=5, version=1)
    return Saved(CheckpointStore(root), path, model, optimizer)
