"""One process of a dynamic-membership RPC group (no `world_size`), for
test_rpc_rejoin.py: `python rpc_member.py NAME RANK DIR`. It writes DIR/NAME.json when it
is up (or could not join) and leaves when DIR/stop exists."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch.distributed.rpc as rpc


def wait_for(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.1)


def joined(name: str) -> bool:
    try:
        rpc.get_worker_info(name)
    except RuntimeError:
        return False
    return True


def main(name: str, rank: int, folder: Path) -> None:
    options = rpc.TensorPipeRpcBackendOptions(init_method="env://", rpc_timeout=5)
    try:
        rpc.init_rpc(name, rank=rank, rpc_backend_options=options)
    except RuntimeError as error:
        (folder / f"{name}.json").write_text(json.dumps({"joined": False, "error": str(error)}))
        return
    record = {"joined": True, "pid": os.getpid()}
    if name != "server":
        wait_for(lambda: joined("server"))
        record["server_pid"] = rpc.rpc_sync("server", os.getpid)
    (folder / f"{name}.json").write_text(json.dumps(record))
    wait_for(lambda: (folder / "stop").exists(), timeout_s=60.0)
    rpc.shutdown(graceful=False)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
