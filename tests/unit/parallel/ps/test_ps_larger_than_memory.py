"""Shards larger than the address space a server may have: windowed mapping under RLIMIT_AS.

A child process measures its own size after setup, caps its address space (RLIMIT_AS) at
that plus 256 MiB, and applies Adam updates to 4 x 48 MiB of parameters whose files (two
slots of parameters and Adam moments, 1,152 MiB) are over four times that headroom, and one
slot's parameters and moments alone more than twice it. The windowed store peaks near 100 MiB
above its start here; the headroom leaves room for the allocator and thread reservations that
other machines add (128 MiB was too tight on one). Controls show the cap
bites: a plain allocation of twice the headroom fails, and so does an unwindowed store.
The result equals torch's Adam on each whole parameter, computed here without a cap.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from store_rlimit_params import NAMES, grads_for, initial_params, make_optimizer, meta_params

from scaletrain.parallel.ps import ShardStore

WORKER = Path(__file__).with_name("store_rlimit_worker.py")
HEADROOM_MIB = 256
UPDATES = 3
WINDOW_MB = 4  # the address space needed: a gradient (48 MiB) + ~8 windows (see store.py)


@pytest.mark.slow
def test_adam_updates_of_shards_larger_than_the_address_space_limit(tmp_path):
    ShardStore(
        initial_params(), make_optimizer=make_optimizer, shards_dir=tmp_path, server=0, window_mb=8
    ).close()
    result = subprocess.run(
        [
            sys.executable,
            str(WORKER),
            str(tmp_path),
            str(HEADROOM_MIB),
            str(UPDATES),
            str(WINDOW_MB),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[:3000]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["control_alloc"] == "MemoryError"
    assert report["control_unwindowed"] in ("OSError", "MemoryError", "RuntimeError")
    assert report["version"] == UPDATES
    assert report["limit_mib"] == report["baseline_mib"] + HEADROOM_MIB
    assert report["files_mib"] > 4 * HEADROOM_MIB
    params_mib = len(NAMES) * meta_params()[NAMES[0]].numel() * 4 >> 20
    assert 3 * params_mib > 2 * HEADROOM_MIB  # one slot: parameters and two Adam moments
    print(report)  # the figures for the record (pytest -s)

    store = ShardStore(
        meta_params(),
        make_optimizer=make_optimizer,
        shards_dir=tmp_path,
        server=0,
        resume=True,
        window_mb=8,
    )
    assert store.version == UPDATES
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the child: the same split of every kernel
    try:
        for name in NAMES:
            param = initial_params()[name]
            optimizer = make_optimizer([param])
            for update in range(1, UPDATES + 1):
                param.grad = grads_for(update)[name]
                optimizer.step()
            assert torch.equal(store.read([name])[name], param), name
    finally:
        torch.set_num_threads(threads)
    store.close()
