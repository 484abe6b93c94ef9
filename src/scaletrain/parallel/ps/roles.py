"""Who is who in an asynchronous parameter-server job: the first ranks train, then the
spare workers wait, and the last ranks serve."""

from __future__ import annotations

from dataclasses import dataclass

from scaletrain.errors import ConfigError


@dataclass(frozen=True)
class Roles:
    """Ranks 0..W-1 are workers (rank 0 writes the run directory), W..W+K-1 spare workers
    (they take over a lost worker), W+K..W+K+S-1 servers."""

    num_workers: int
    num_servers: int
    num_spares: int = 0

    def is_server(self, rank: int) -> bool:
        return rank >= self.num_workers + self.num_spares

    def is_spare(self, rank: int) -> bool:
        return self.num_workers <= rank < self.num_workers + self.num_spares

    def server_rank(self, index: int) -> int:
        """The global rank of server `index`."""
        return self.num_workers + self.num_spares + index

    def name(self, rank: int) -> str:
        """The RPC name of a global rank."""
        if self.is_server(rank):
            return server_name(rank - self.server_rank(0))
        if self.is_spare(rank):
            return f"spare{rank - self.num_workers}"
        return f"worker{rank}"

    @property
    def servers(self) -> list[str]:
        return [server_name(index) for index in range(self.num_servers)]

    @property
    def spares(self) -> list[str]:
        return [self.name(self.num_workers + index) for index in range(self.num_spares)]

    @property
    def world_size(self) -> int:
        return self.num_workers + self.num_spares + self.num_servers

    @property
    def everyone(self) -> list[str]:
        return [self.name(rank) for rank in range(self.world_size)]


def server_name(index: int) -> str:
    return f"server{index}"


def make_roles(world_size: int, servers: int, spares: int = 0) -> Roles:
    """Split the launched processes: `--nproc` counts workers, spares and servers alike;
    at least one must train."""
    if servers >= world_size:
        raise ConfigError(
            f"parallel.ps.servers: {servers} server(s) need at least {servers + 1} processes "
            f"(one or more workers besides), but {world_size} were launched; "
            f"start more with --nproc, or lower parallel.ps.servers"
        )
    if servers + spares >= world_size:
        raise ConfigError(
            f"parallel.ps.spare_workers: {spares} spare(s) and {servers} server(s) need at "
            f"least {servers + spares + 1} processes (--nproc counts workers, spares and "
            f"servers), but {world_size} were launched; start more with --nproc, or lower "
            "parallel.ps.spare_workers"
        )
    return Roles(num_workers=world_size - servers - spares, num_servers=servers, num_spares=spares)
