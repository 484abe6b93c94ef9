"""DCP stores non-tensor values (the optimizer's lr, betas ...) as torch.save pickles inside
its data files: a crafted one is refused by weights_only loading, never executed."""

import dataclasses
import io
import os
import pickle

import pytest
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict

from scaletrain.checkpoint import CheckpointStore, write_manifest
from scaletrain.checkpoint.safe_reader import load_metadata_safely
from scaletrain.errors import CheckpointError
from scaletrain.parallel import SingleStrategy


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _tensors(model, optimizer):
    model_state, optim_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optim": optim_state}


def test_malicious_value_inside_a_data_file_is_refused(tmp_path):
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 3)).sum().backward()
    optimizer.step()
    store = CheckpointStore(tmp_path / "checkpoints")
    path = store.save(
        step=1,
        tensors=_tensors(model, optimizer),
        side_state={"step": 1},
        strategy=SingleStrategy(torch.device("cpu")),
    )
    marker = tmp_path / "pwned"
    payload = io.BytesIO()
    torch.save({"lr": _Payload(marker)}, payload)

    # An attacker appends the pickle to a data file and points the lr entry at it: the
    # metadata stays made of DCP's own classes, so it passes the restricted unpickler.
    metadata = load_metadata_safely((path / ".metadata").read_bytes())
    key = next(k for k in metadata.storage_data if k.fqn == "optim.param_groups.0.lr")
    info = metadata.storage_data[key]
    data_file = path / info.relative_path
    offset = data_file.stat().st_size
    with open(data_file, "ab") as handle:
        handle.write(payload.getvalue())
    metadata.storage_data[key] = dataclasses.replace(
        info, offset=offset, length=len(payload.getvalue())
    )
    (path / ".metadata").write_bytes(pickle.dumps(metadata))
    (path / "manifest.json").unlink()
    write_manifest(path, step=1)  # resealed: the checksums cannot catch it

    with pytest.raises(CheckpointError, match="optim.param_groups.0.lr.*not plain data"):
        store.load(path, tensors=_tensors(model, optimizer), rank=0)
    assert not marker.exists(), "the pickle payload ran"
