"""The asynchronous parameter server: its state (shard plan, parameter/optimizer shards,
staleness gate; no torch.distributed there) and its runtime (roles, the RPC service, the
workers' strategy in `worker.py`).
"""

from __future__ import annotations

from scaletrain.parallel.ps.placement import plan_shards, server_loads
from scaletrain.parallel.ps.staleness import Decision, StalenessGate
from scaletrain.parallel.ps.store import DEFAULT_FLUSH_EVERY, ShardStore

__all__ = [
    "DEFAULT_FLUSH_EVERY",
    "Decision",
    "ShardStore",
    "StalenessGate",
    "plan_shards",
    "server_loads",
]
