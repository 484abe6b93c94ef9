"""`parallel.dims` -> one DeviceMesh ("pp", "dp_replicate", "dp_shard", "tp"), as torchtitan.

Ranks are laid out row-major over the four dims, so the tensor-parallel ranks of one group
are neighbours (on one node: TP's collectives run every layer, the data-parallel ones once
per step) and the pipeline stages are the outermost, slowest-varying coordinate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, distribute_tensor

from scaletrain.config.dims import DimsConfig
from scaletrain.errors import ConfigError

MESH_DIMS = ("pp", "dp_replicate", "dp_shard", "tp")


@dataclass(frozen=True)
class ParallelDims:
    """The resolved sizes (their product is the world size) and this rank's place in them."""

    pp: int
    dp_replicate: int
    dp_shard: int
    tp: int
    rank: int = 0

    @property
    def world_size(self) -> int:
        return self.pp * self.dp_replicate * self.dp_shard * self.tp

    @property
    def sizes(self) -> tuple[int, int, int, int]:
        return (self.pp, self.dp_replicate, self.dp_shard, self.tp)

    @property
    def dp_size(self) -> int:
        """Ranks that read different samples: the loader's and the loss's world size."""
        return self.dp_replicate * self.dp_shard

    @property
    def coordinates(self) -> dict[str, int]:
        """This rank's index along each dim (row-major, as `init_device_mesh` lays it out)."""
        coords, rest = {}, self.rank
        for name, size in reversed(list(zip(MESH_DIMS, self.sizes, strict=True))):
            coords[name], rest = rest % size, rest // size
        return coords

    @property
    def dp_rank(self) -> int:
        """This rank's data-parallel index: ranks of one TP group (and stages) share it."""
        coords = self.coordinates
        return coords["dp_replicate"] * self.dp_shard + coords["dp_shard"]

    @property
    def tp_rank(self) -> int:
        return self.coordinates["tp"]

    @property
    def pp_rank(self) -> int:
        return self.coordinates["pp"]

    @property
    def tp_enabled(self) -> bool:
        return self.tp > 1

    @property
    def pp_enabled(self) -> bool:
        return self.pp > 1

    @property
    def dp_shard_enabled(self) -> bool:
        return self.dp_shard > 1

    @property
    def dp_replicate_enabled(self) -> bool:
        return self.dp_replicate > 1

    def describe(self) -> str:
        """`dp_replicate 1 x dp_shard 2 x tp 2 x pp 1`, for logs and messages."""
        return " x ".join(
            f"{name} {size}" for name, size in zip(MESH_DIMS, self.sizes, strict=True)
        )


def resolve_dims(
    cfg: DimsConfig, *, world_size: int, rank: int = 0, nodes: int | None = None
) -> ParallelDims:
    """Fill `dp_shard: auto` and check that the dims multiply to the world size.

    `nodes`: `parallel.fsdp.hybrid` (shard inside a node, replicate across nodes) maps to
    `dp_replicate = nodes`, the node count the launcher reported.
    """
    replicate = nodes if nodes is not None else cfg.dp_replicate
    others = replicate * cfg.tp * cfg.pp
    if cfg.dp_shard == "auto":
        if world_size % others:
            raise ConfigError(
                f"parallel.dims: dp_replicate {replicate} x tp {cfg.tp} x pp {cfg.pp} = "
                f"{others} does not divide the world size {world_size}; launch a multiple "
                f"of {others} processes or change the dims"
            )
        shard = world_size // others
    else:
        shard = cfg.dp_shard
    dims = ParallelDims(pp=cfg.pp, dp_replicate=replicate, dp_shard=shard, tp=cfg.tp, rank=rank)
    if dims.world_size != world_size:
        raise ConfigError(
            f"parallel.dims: {dims.describe()} = {dims.world_size} processes, but "
            f"{world_size} were launched; make the product equal the world size "
            "(dp_shard: auto fills it)"
        )
    return dims


def build_device_mesh(dims: ParallelDims, device_type: str) -> DeviceMesh:
    """The one mesh of a run: all four dims, size-1 ones included, so `mesh[name]` works for
    each name; `mesh["dp_replicate", "dp_shard"]` is the data-parallel (FSDP/HSDP) mesh.

    Under TP, flattened dims are added too (`dp_shard_tp`, `dp_tp`): a DTensor reduced over
    FSDP's and TP's dims at once (the gradient norm) then takes one all-reduce instead of one
    per dim, and every rank gets the same bits (two sequential reductions may round
    differently per rank).
    """
    mesh = init_device_mesh(device_type, dims.sizes, mesh_dim_names=MESH_DIMS)
    if dims.tp_enabled:
        mesh["dp_shard", "tp"]._flatten("dp_shard_tp")
        mesh["dp_replicate", "dp_shard", "tp"]._flatten("dp_tp")
    return mesh


def data_parallel_group(mesh: DeviceMesh):
    """One process group of the ranks reading different samples (metrics are summed over
    it); torch keeps the flattened mesh, built once here."""
    return mesh["dp_replicate", "dp_shard"]._flatten("dp").get_group()


def data_parallel_mesh(mesh: DeviceMesh, dims: ParallelDims) -> DeviceMesh:
    """What FSDP shards over: `dp_shard`, or (`dp_replicate`, `dp_shard`) for HSDP."""
    if dims.dp_replicate_enabled:
        return mesh["dp_replicate", "dp_shard"]
    return mesh["dp_shard"]


def placed_like(tensor: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """`tensor` (a whole one, shaped as `param`) on `param`'s device and dtype, and sharded
    as `param` is where that is a DTensor (FSDP, TP), so the two combine elementwise."""
    tensor = tensor.to(param.device, param.dtype)
    if not isinstance(param, DTensor):
        return tensor
    return distribute_tensor(tensor, param.device_mesh, param.placements)
