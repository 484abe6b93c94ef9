"""Which parameter server holds which parameter: greedy by size, the same on every process.

Every process (servers and workers) computes the plan from the model's parameter names and
sizes alone, so no process has to send it to another.
"""

from __future__ import annotations

from scaletrain.errors import ConfigError


def plan_shards(named_numels: list[tuple[str, int]], servers: int) -> dict[str, int]:
    """Parameter name -> server index, balancing the number of elements per server.

    Greedy by size (the largest parameter first, onto the least-loaded server; ties go to the
    server holding fewer parameters, then the lower index), so the plan depends only on the
    names, sizes and their order, and the first `servers` parameters land on distinct servers:
    every server holds at least one. More servers than parameters is refused (a server with
    nothing to hold would only cost a process).

    Args:
        named_numels: (name, number of elements) of every parameter, in model order.
        servers: how many servers (`parallel.ps.servers`).
    """
    names = [name for name, _ in named_numels]
    if len(set(names)) != len(names):
        raise ValueError(
            f"parameter names repeat: {sorted({n for n in names if names.count(n) > 1})}"
        )
    if servers < 1:
        raise ValueError(f"servers must be >= 1, got {servers}")
    if servers > len(named_numels):
        raise ConfigError(
            f"parallel.ps.servers: {servers} servers, but the model has only "
            f"{len(named_numels)} parameter tensors to share out; use at most {len(named_numels)}"
        )
    loads = [0] * servers
    counts = [0] * servers
    plan: dict[str, int] = {}
    by_size = sorted(range(len(named_numels)), key=lambda position: -named_numels[position][1])
    for position in by_size:  # sorted() is stable: equal sizes keep model order
        name, numel = named_numels[position]
        server = min(range(servers), key=lambda index: (loads[index], counts[index], index))
        plan[name] = server
        loads[server] += numel
        counts[server] += 1
    return {name: plan[name] for name in names}  # model order, for readable logs


def server_loads(plan: dict[str, int], named_numels: list[tuple[str, int]]) -> list[int]:
    """Elements held per server under `plan` (for logs and the balance check)."""
    loads = [0] * (max(plan.values()) + 1)
    for name, numel in named_numels:
        loads[plan[name]] += numel
    return loads
