"""A parameter server's process after the common start (RPC, data, the model on the meta
device: no values): hold this server's shard of the parameters (initial values from worker 0)
in a `ShardStore` stepped by the run's optimizer
(`optim.*`), answer the workers until all are done, then leave its files in `RUN/ps/`."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from scaletrain.config import Config, OptimConfig
from scaletrain.errors import ConfigError, UserError
from scaletrain.fileio import atomic_write_json
from scaletrain.optim.optimizers import OPTIMIZERS, choose_kernel
from scaletrain.optim.params import bias_and_norm_ids
from scaletrain.parallel.ps.account import read_history
from scaletrain.parallel.ps.seed import from_worker
from scaletrain.parallel.ps.service import ParameterServer, abandon
from scaletrain.parallel.ps.store import ShardStore, StalenessGate, plan_shards
from scaletrain.parallel.ps.worker import parameter_name
from scaletrain.rundir import RunDir

PS_FOLDER = "ps"


def serve_parameters(cfg: Config, model: nn.Module, *, run: RunDir, strategy, resume: bool) -> int:
    """Serve this process's shard until every worker is done; returns the updates applied."""
    ps, roles = cfg.parallel.ps, strategy.roles
    index = strategy.rank - roles.server_rank(0)
    named = {
        parameter_name(name): param
        for name, param in model.named_parameters()
        if param.requires_grad
    }
    owner = plan_shards([(name, p.numel()) for name, p in named.items()], roles.num_servers)
    # names, shapes and dtypes only: the model is on the meta device (api._prepare)
    mine = {name: p.detach() for name, p in named.items() if owner[name] == index}
    try:
        if resume and ps.shards_dir is None:
            raise ConfigError(
                "parallel.ps.shards_dir: resuming an async_ps run needs the servers' shards on "
                "disk; this run kept them in memory only (set parallel.ps.shards_dir for new runs)"
            )
        if resume:  # the workers' Checkpointer.resume meets every process at a barrier
            strategy.barrier()
        store = ShardStore(
            mine,
            make_optimizer=ShardOptimizer(cfg.optim, names=list(mine), exempt=exempt_names(model)),
            shards_dir=Path(ps.shards_dir) if ps.shards_dir else None,
            server=index,
            flush_every=ps.flush_every,
            resume=resume,
            window_mb=ps.window_mb,
            initial=None
            if resume
            else from_worker(roles.name(0), timeout_s=cfg.parallel.timeout_s),
        )
    except UserError as error:  # only this process knows: say it (ranks > 0 are quiet)
        print(f"error: parameter server {index}: {error}", file=sys.stderr)
        abandon()
        raise
    folder = run.root / PS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)  # a server on another node: no run dir yet
    server_log = folder / f"server_{index}.jsonl"
    server = ParameterServer(
        index,
        store=store,
        gate=StalenessGate(ps.staleness, ps.stale),
        log_path=server_log,
        num_workers=roles.num_workers,
        slots=strategy.worker_slots(),  # server 0 with spare workers: who hosts each worker
    )
    if resume and index == 0:  # a stopped attempt's worker 0 never logged its losses
        server.recall(read_history(server_log))
    try:
        strategy.serve(server)
    finally:
        server.close()
        if not store.torn:  # a failed update is never committed: a resume redoes it
            save_file(
                {name: t.contiguous() for name, t in store.read().items()},
                str(folder / f"server_{index}.safetensors"),
            )
        atomic_write_json(folder / f"server_{index}.json", server.summary())
        store.close()
    if server.failure is not None:
        raise server.failure
    return server.counts["applied"]


class ShardOptimizer:
    """`make_optimizer` for a shard: the run's optimizer over the shard's parameters (given in
    the order of `names`), weight decay grouped as `build_optimizer` groups it (biases and
    norms exempt). The workers' schedule sets the lr of each update (`ShardStore.apply`)."""

    def __init__(self, cfg: OptimConfig, *, names: list[str], exempt: set[str]):
        self.cfg, self.names, self.exempt = cfg, names, exempt

    def __call__(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        named = list(zip(self.names, params, strict=True))
        cfg = self.cfg
        if cfg.weight_decay == 0:
            groups = [{"name": "all", "params": [p for _, p in named], "weight_decay": 0.0}]
        else:
            decay = [p for name, p in named if name not in self.exempt]
            keep = [p for name, p in named if name in self.exempt]
            groups = [
                {"name": "decay", "params": decay, "weight_decay": cfg.weight_decay},
                {"name": "no_decay", "params": keep, "weight_decay": 0.0},
            ]
            groups = [group for group in groups if group["params"]]
        tensors = [p for group in groups for p in group["params"]]
        return OPTIMIZERS[cfg.name](
            cfg, groups, choose_kernel(cfg.name, cfg.implementation, tensors)
        )


def exempt_names(model: nn.Module) -> set[str]:
    """Names of the biases and norm-layer parameters (no weight decay), spelled alike."""
    exempt = bias_and_norm_ids(model)
    return {parameter_name(name) for name, p in model.named_parameters() if id(p) in exempt}
