"""The parameter server's state: shard plan, parameter/optimizer shards, staleness gate.

No torch.distributed here: the runtime (processes, RPC, the server loop) calls these.
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
