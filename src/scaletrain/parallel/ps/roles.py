"""Who is who in an asynchronous parameter-server job: the first ranks train, the last serve."""

from __future__ import annotations

from dataclasses import dataclass

from scaletrain.errors import ConfigError


@dataclass(frozen=True)
class Roles:
    """Ranks 0..W-1 are workers (rank 0 writes the run directory), W..W+S-1 servers."""

    num_workers: int
    num_servers: int

    def is_server(self, rank: int) -> bool:
        return rank >= self.num_workers

    def name(self, rank: int) -> str:
        """The RPC name of a global rank."""
        if self.is_server(rank):
            return server_name(rank - self.num_workers)
        return f"worker{rank}"

    @property
    def servers(self) -> list[str]:
        return [server_name(index) for index in range(self.num_servers)]

    @property
    def everyone(self) -> list[str]:
        return [self.name(rank) for rank in range(self.num_workers + self.num_servers)]


def server_name(index: int) -> str:
    return f"server{index}"


def make_roles(world_size: int, servers: int) -> Roles:
    """Split the launched processes; at least one must train."""
    if servers >= world_size:
        raise ConfigError(
            f"parallel.ps.servers: {servers} server(s) need at least {servers + 1} processes "
            f"(one or more workers besides), but {world_size} were launched; "
            f"start more with --nproc, or lower parallel.ps.servers"
        )
    return Roles(num_workers=world_size - servers, num_servers=servers)
