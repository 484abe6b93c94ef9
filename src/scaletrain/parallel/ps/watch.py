"""Server 0's watch over the workers while it serves: a worker whose process died (its ping
fails, which a slow or stopped one's does not) is handed to a free spare worker, or else
marked lost on every server; a spare that died waiting is struck from the pool, and the
waiting spares are released once every worker finished training.

Only server 0 watches, so one book (`WorkerSlots`) decides every takeover; the other servers
learn of a worker lost for good from it (`rpc_worker_lost`) and of a takeover from the spare's
pushes (its incarnation number)."""

from __future__ import annotations

import torch.distributed.rpc as rpc

from scaletrain.parallel.ps import service
from scaletrain.parallel.ps.roles import Roles

PING_EVERY_S = 1.0  # server 0 looks for lost workers this often


def serve(server: service.ParameterServer, roles: Roles) -> None:
    """Answer pushes and pulls (RPC threads) until every worker left; watch on server 0."""
    service.install(server)
    pings: dict[str, rpc.Future] = {}  # RPC name -> its ping in flight
    while not server.finished.wait(PING_EVERY_S):
        if server.index != 0:
            continue
        if server.trained.is_set() and server.slots is not None:
            server.slots.release()  # every worker is done: the waiting spares may leave
        for name, worker in _watched(server, roles):
            ping = pings.get(name)
            if ping is not None and ping.done():
                del pings[name]
                if _failed(ping):
                    _lost(server, roles, name, worker)
            elif ping is None:
                pings[name] = rpc.rpc_async(name, service.rpc_ping, timeout=0)
    if server.slots is not None:
        server.slots.release()


def _watched(server: service.ParameterServer, roles: Roles) -> list[tuple[str, int | None]]:
    """(RPC name, logical worker or None for a free spare) of every process to ping."""
    hosts = server.slots.hosts if server.slots is not None else {}
    watched = [
        (hosts.get(worker, roles.name(worker)), worker)
        for worker in range(roles.num_workers)
        if worker not in server.left
    ]
    free = server.slots.free if server.slots is not None else []
    return watched + [(name, None) for name in list(free)]


def _lost(server: service.ParameterServer, roles: Roles, name: str, worker: int | None) -> None:
    if worker is None:
        server.slots.spare_lost(name)
        return
    if server.slots is not None and server.slots.hosts.get(worker) != name:
        return  # an old ping: the worker moved to a spare meanwhile
    if server.worker_lost(worker) is None:  # no spare took it: the others stop waiting too
        for other in roles.servers[1:]:
            rpc.rpc_async(other, service.rpc_worker_lost, args=(worker,))


def _failed(future) -> bool:
    try:
        future.wait()
    except RuntimeError:
        return True
    return False
