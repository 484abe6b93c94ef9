"""Crash consistency of memory-mapped shards: a store's process dies mid-update or mid-commit.

After a death anywhere the store resumes at its last commit: the version a flush recorded,
with exactly the parameters the same updates give a plain torch optimizer
(store_crash_worker.Reference), never half an update. The fast test tears an update by an
exception and reads the files from a second store while the first is still open; the slow
ones SIGKILL a real process holding the store, at a chosen point and at random moments.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from store_crash_worker import Reference, initial_params, make_optimizer, update_grads

from scaletrain.parallel.ps import ShardStore

WORKER = Path(__file__).with_name("store_crash_worker.py")


class Explodes(dict):
    """Gradients whose `name` raises at its second fetch (the first is the shape check)."""

    def __init__(self, grads, name):
        super().__init__(grads)
        self.name, self.fetches = name, 0

    def __getitem__(self, key):
        if key == self.name:
            self.fetches += 1
            if self.fetches == 2:
                raise RuntimeError("the server dies here")
        return super().__getitem__(key)


def _open(root: Path, numel: int, **kwargs) -> ShardStore:
    return ShardStore(
        initial_params(numel), make_optimizer=make_optimizer, shards_dir=root, server=0, **kwargs
    )


def _assert_equal(store: ShardStore, want: dict[str, torch.Tensor]) -> None:
    got = store.read()
    for name in want:
        assert torch.equal(got[name], want[name]), f"{name} at version {store.version}"


def test_a_torn_update_leaves_the_last_commit_whole_on_disk(tmp_path):
    numel = 4096
    store = _open(tmp_path, numel, flush_every=3, window_mb=1 / 1024)  # 16 windows each
    for update in range(1, 8):
        store.apply(update_grads(update, numel))
    with pytest.raises(RuntimeError, match="dies here"):
        store.apply(Explodes(update_grads(8, numel), "layer2.weight"))
    # layers 0 and 1 of update 8 are written in place in the working slot; 7 was never
    # committed: the files say 6, whole, and the torn store refuses to commit anything
    assert store.torn
    with pytest.raises(RuntimeError, match="failed halfway.*resume=True"):
        store.flush()
    with pytest.raises(RuntimeError, match="failed halfway"):
        store.read()
    store.close()
    reopened = _open(tmp_path, numel, resume=True)
    assert reopened.version == 6
    reference = Reference(numel)
    _assert_equal(reopened, reference.at(6))
    for update in range(7, 10):  # and it goes on exactly like an uninterrupted run
        reopened.apply(update_grads(update, numel))
    _assert_equal(reopened, reference.at(9))


def _start(root: Path, *, flush_every, window, numel, kill_update=0, kill_param=0):
    args = [root, flush_every, window, numel, kill_update, kill_param, 10**6]
    return subprocess.Popen(
        [sys.executable, str(WORKER), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_sigkill_in_the_middle_of_an_update_resumes_at_the_last_flush(tmp_path):
    numel = 4096
    # commits at 3 and 6; SIGKILL during update 8, after two of the four parameters were
    # stepped in place window by window
    child = _start(
        tmp_path, flush_every=3, window=1 / 1024, numel=numel, kill_update=8, kill_param=2
    )
    out, err = child.communicate(timeout=300)
    assert child.returncode == -signal.SIGKILL, err
    assert out.splitlines()[-1] == "version 7"
    store = _open(tmp_path, numel, resume=True)
    assert store.version == 6
    reference = Reference(numel)
    _assert_equal(store, reference.at(6))
    for update in range(7, 10):
        store.apply(update_grads(update, numel))
    _assert_equal(store, reference.at(9))
    store.close()


@pytest.mark.slow
def test_sigkill_at_random_moments_never_resumes_torn_or_unflushed(tmp_path):
    numel = 1 << 16  # 256 KiB per parameter: updates and commits take long enough to be hit
    rng = random.Random(0)
    reference = Reference(numel)
    versions = []
    for _ in range(5):
        child = _start(tmp_path, flush_every=2, window="none", numel=numel)
        started = child.stdout.readline()
        assert started.startswith("start"), child.stderr.read()
        time.sleep(rng.uniform(0.05, 0.5))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate(timeout=60)
        last = int([started, *out.splitlines()][-1].split()[1])
        store = _open(tmp_path, numel, resume=True)
        # printed after each update: the kill came before the next print, maybe after its commit
        assert store.version % 2 == 0 and last - 1 <= store.version <= last + 1
        _assert_equal(store, reference.at(store.version))
        versions.append(store.version)
        store.close()
    assert versions == sorted(versions) and versions[-1] > 0
