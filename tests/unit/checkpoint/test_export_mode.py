"""An exported model.safetensors (and every run file) gets the mode a plain open() would
give it: 0644 under the usual umask 022, never mkstemp's private 0600, and the user's
stricter umask where they set one."""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager

import pytest
from safetensors.torch import load_file

from scaletrain.checkpoint.export import export_safetensors
from scaletrain.fileio import atomic_write_json, current_umask


@contextmanager
def _umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077, 0o002])
def test_export_and_run_files_take_the_mode_open_gives(saved, tmp_path, mask):
    with _umask(mask):
        assert current_umask() == mask
        out = export_safetensors(saved.store.root, tmp_path / "model.safetensors", which="last")
        atomic_write_json(tmp_path / "summary.json", {"status": "finished"})
        with open(tmp_path / "plain.bin", "wb"):
            pass
    expected = _mode(tmp_path / "plain.bin")
    assert expected == 0o666 & ~mask
    assert _mode(out) == expected and _mode(tmp_path / "summary.json") == expected
    assert set(load_file(out)) == {"weight", "bias"}
