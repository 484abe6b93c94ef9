"""A full disk during a save: one-line CheckpointError, earlier checkpoints byte-identical,
nothing half-written left behind, the in-memory state untouched.

The disk is a real 1 MiB tmpfs (needs root and `mount`; skipped with the reason otherwise).
"""

import os
import re
import subprocess

import pytest
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict

from scaletrain.checkpoint import CheckpointStore
from scaletrain.checkpoint.manifest import sha256_file
from scaletrain.errors import CheckpointError
from scaletrain.parallel import SingleStrategy

STRATEGY = SingleStrategy(torch.device("cpu"))


@pytest.fixture
def small_disk(tmp_path):
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(directory, *, leave_bytes):
    """Write a filler file until the disk is full, then free `leave_bytes`."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:  # ENOSPC: the disk is full
        pass
    finally:
        os.close(fd)
    os.truncate(filler, max(filler.stat().st_size - leave_bytes, 0))
    return filler


def _state():
    torch.manual_seed(0)
    model = nn.Linear(64, 64)  # ~17 KB of weights, ~50 KB with AdamW state
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 64)).sum().backward()
    optimizer.step()
    return model, optimizer


def _save(store, step, model, optimizer, *, asynchronous=False):
    """`asynchronous`: True, or "owned" (a snapshot's own copy, written as it is)."""
    model_state, optim_state = get_state_dict(model, optimizer)
    arguments = {
        "step": step,
        "tensors": {"model": model_state, "optim": optim_state},
        "side_state": {"step": step},
        "strategy": STRATEGY,
    }
    if asynchronous:
        store.save_async(**arguments, owned=asynchronous == "owned")
        return store.wait(STRATEGY)
    return store.save(**arguments)


def _hashes(path):
    return {p.name: sha256_file(p) for p in sorted(path.iterdir())}


@pytest.mark.parametrize(
    "asynchronous", [False, True, "owned"], ids=["sync", "async", "owned-snapshot"]
)
def test_disk_full_during_save(small_disk, asynchronous):
    store = CheckpointStore(small_disk / "checkpoints", keep_last=1)
    model, optimizer = _state()
    first = _save(store, 1, model, optimizer)
    before = _hashes(first)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    filler = _fill(small_disk, leave_bytes=20_000)  # room for part of the next save only

    with pytest.raises(CheckpointError) as caught:
        _save(store, 2, model, optimizer, asynchronous=asynchronous)
    message = str(caught.value)
    assert "\n" not in message and "step_00000002" in message
    assert "No space left on device" in message and "earlier checkpoints are untouched" in message
    assert _hashes(first) == before  # keep_last=1 did not delete the only complete one
    assert [p.name for p in store.root.iterdir()] == ["step_00000001"]  # no .tmp left over
    for name, value in model.state_dict().items():
        assert torch.equal(value, weights[name]), name
    assert store.latest_valid() == first

    filler.unlink()  # space again: the next save works and replaces the old one
    second = _save(store, 3, model, optimizer, asynchronous=asynchronous)
    assert store.committed() == [second]


def test_a_run_that_fills_the_disk_ends_with_one_line(small_disk, tmp_path, capsys):
    """Before: the CheckpointError was chained to an OSError from writing summary.json on
    the same full disk: a traceback and exit 1."""
    from scaletrain.cli import main

    config = tmp_path / "run.yaml"
    config.write_text(
        "data: {source: builtin, name: digits}\n"
        "model: {name: mlp, hidden: [256, 256]}\n"
        "train: {max_steps: 3, precision: '32'}\n"
        "log: {progress: false, tensorboard: false, report: false}\n"
    )
    _fill(small_disk, leave_bytes=60_000)  # the run's small files fit, its checkpoint not
    capsys.readouterr()
    code = main(["train", str(config), f"run.out_dir={small_disk}", "run.name=full"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: ") and "No space left" in err[0], err
    assert not any("Traceback" in line for line in err)
    # what to do about it: the room this rank's checkpoint needs, and what is free
    assert re.search(r"MB free in .+; this rank's part needs about [0-9.]+ MB", err[0]), err
