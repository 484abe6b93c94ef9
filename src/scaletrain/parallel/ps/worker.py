"""`parallel.strategy: async_ps`: the strategy of every process of a parameter-server job.

A worker computes gradients on its own slice of each global batch and, instead of stepping
an optimizer, pushes them (with the version of the parameters they were computed on) to the
servers holding each parameter; the reply carries the parameters that changed. Nothing waits
for the other workers: the collectives the loop calls (loss and metric sums, flags) are
worker-local, each worker standing for all of them. A server process runs the same start
(RPC, data, the model on the meta device) and then serves (`train/ps_serve.py`) instead of training.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.distributed.rpc as rpc
from torch import nn
from torch.distributed.checkpoint.state_dict import _init_optim_state

from scaletrain.config import ParallelConfig
from scaletrain.errors import UserError
from scaletrain.parallel.env import LaunchEnv
from scaletrain.parallel.ps import seed, service, watch
from scaletrain.parallel.ps.account import membership_events, ps_record
from scaletrain.parallel.ps.roles import make_roles
from scaletrain.parallel.ps.slots import WorkerSlots
from scaletrain.parallel.ps.store import plan_shards
from scaletrain.parallel.strategy import BaseStrategy, WrapRequest

_COMPILED = re.compile(r"(^|\.)_orig_mod(?=\.|$)")  # regional torch.compile's wrapper


class ServerLostError(UserError):
    """A parameter server died: the run cannot go on without its shard."""

    exit_code = 3  # not bad input (2); launch/ps_supervisor.py's SERVER_LOST_EXIT


def parameter_name(name: str) -> str:
    """A parameter's name as every process spells it, compiled regions or not."""
    return _COMPILED.sub("", name).lstrip(".")


class AsyncPSStrategy(BaseStrategy):
    """Workers push gradients and pull parameters; no collective in the steady state."""

    name = "async_ps"
    validated_weights_are_final = False  # see BaseStrategy

    def __init__(self, cfg: ParallelConfig, *, env: LaunchEnv, device: torch.device):
        super().__init__(cfg, device)
        self.env = env
        self.roles = make_roles(env.world_size, cfg.ps.servers, cfg.ps.spare_workers)
        self.rank = env.rank  # a spare's becomes the logical worker's it takes over
        self.world_size = self.roles.num_workers  # the plan and data: workers share batches
        self.is_server = self.roles.is_server(env.rank)
        self.is_spare = self.roles.is_spare(env.rank)  # waits; may take over a lost worker
        self.takeover: dict | None = None  # a spare's: which worker, from which step
        self.incarnation = 0  # a takeover's number: servers refuse pushes of older ones
        self._state = None  # the loop's TrainState: pushes carry its step
        self.writes_checkpoints = self.is_main  # worker 0 saves alone: no collective save
        self.versions: list[int] = [-1] * self.roles.num_servers  # -1: never pulled
        self.shards: list[list[tuple[str, nn.Parameter]]] = []  # per server: its parameters
        self.optimizer: torch.optim.Optimizer | None = None
        self.steps_pushed = 0
        self.stats = {"bytes_pushed": 0, "bytes_pulled": 0, "dropped": 0, "scaled": 0}
        self.staleness: dict[int, int] = {}
        self._rpc_up = False

    # --- lifecycle ---------------------------------------------------------------------
    def setup(self) -> None:
        # `tcp`: TensorPipe's same-host paths (shared memory, cross-memory attach) would
        # skip the network even between network namespaces, so a shaped link is not used
        tcp_only = {"_transports": ["uv"], "_channels": ["basic"]}
        options = rpc.TensorPipeRpcBackendOptions(
            init_method="env://",
            rpc_timeout=float(self.cfg.timeout_s),
            **(tcp_only if self.cfg.ps.transport == "tcp" else {}),
        )
        rpc.init_rpc(
            self.roles.name(self.rank),
            rank=self.rank,
            world_size=self.env.world_size,
            rpc_backend_options=options,
        )
        self._rpc_up = True

    def teardown(self) -> None:
        """Idempotent: a worker tells every server it is done, then RPC shuts down (the
        servers wait for all workers first, so nobody calls a peer that is gone)."""
        if not self._rpc_up:
            return
        self._rpc_up = False
        if self.is_server:  # one that never served (bad input): callers hear so at once,
            service.abandon()  # instead of waiting parallel.timeout_s for it to start
        if not self.is_server and not (self.is_spare and self.takeover is None):
            for name in self.roles.servers:
                # a server that is gone already (it failed, or the run failed at the start)
                # has nothing to be told; the error that ended the run is the one to show
                with contextlib.suppress(RuntimeError):
                    rpc.rpc_sync(name, service.rpc_worker_left, args=(self.rank,))
        # not graceful: its barrier would wait for a lost worker forever; the protocol above
        # (workers leave, then the servers close) leaves no call in flight
        rpc.shutdown(graceful=False)

    def finish_training(self, *, samples_per_step: int) -> list[dict]:
        """Tell the servers this worker is done; worker 0 waits for the others (the run ends
        with its last worker) and returns the servers' counts for metrics.jsonl."""
        # a server lost here (after the last push) is the same one line as during training
        for index, name in enumerate(self.roles.servers):
            self._answer(index, rpc.rpc_async(name, service.rpc_worker_done, args=(self.rank,)))
        if not self.is_main:
            return []
        timeout = float(self.cfg.timeout_s)
        futures = [
            rpc.rpc_async(name, service.rpc_wait_trained, args=(timeout,), timeout=timeout + 60)
            for name in self.roles.servers
        ]
        servers = [self._answer(index, future) for index, future in enumerate(futures)]
        return [
            *membership_events(servers[0]),
            {"ps": ps_record(servers, samples_per_step=samples_per_step)},
        ]

    def serve(self, server: service.ParameterServer) -> None:
        """On a server: answer pushes and pulls until every worker left (`watch.serve`)."""
        watch.serve(server, self.roles)

    def worker_slots(self) -> WorkerSlots | None:
        """Server 0's book of spare workers (`parallel.ps.spare_workers`), else None."""
        if self.rank != self.roles.server_rank(0) or not self.roles.num_spares:
            return None
        return WorkerSlots(self.roles.num_workers, self.roles.spares)

    def wait_for_slot(self) -> bool:
        """On a spare: wait (no data, no pushes) until server 0 hands it a lost worker, then
        become that worker (its rank: data shard, seed, heartbeat); False: the run ended."""
        try:
            takeover = rpc.rpc_sync(
                self.roles.servers[0],
                service.rpc_wait_for_slot,
                args=(self.roles.name(self.rank),),
                timeout=0,  # as long as the run lasts
            )
        except RuntimeError:  # server 0 is gone: the job stops; a spare has nothing to say
            return False
        if takeover is None:
            return False
        self.takeover = takeover
        self.rank = takeover["worker"]
        self.incarnation = takeover["incarnation"]
        return True

    def bind_state(self, state) -> None:
        """The loop's state, once built: pushes carry its step, and a spare that took over a
        worker skips to that worker's position (`train/takeover.py` moves the state)."""
        self._state = state

    # --- model -------------------------------------------------------------------------
    def _place(self, model: nn.Module, blocks: list[nn.Module], request: WrapRequest):
        model = model.to(self.device)
        named = [
            (parameter_name(name), param)
            for name, param in model.named_parameters()
            if param.requires_grad
        ]
        owner = plan_shards(
            [(name, param.numel()) for name, param in named], self.roles.num_servers
        )
        self.shards = [
            [(name, param) for name, param in named if owner[name] == index]
            for index in range(self.roles.num_servers)
        ]
        if self.rank == 0:  # servers built no values: they take their initial ones from here
            seed.offer(named)
        return model

    @property
    def comm_bytes_per_step(self) -> float | None:
        """This worker's bytes pushed and pulled per step so far (train records)."""
        if not self.steps_pushed:
            return None
        return (self.stats["bytes_pushed"] + self.stats["bytes_pulled"]) / self.steps_pushed

    def bind_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """The worker's optimizer is never stepped: its schedule's lr travels with each push
        (so torch's warning that the schedule steps before the optimizer is not news).

        Its state is created now (zeros, as DCP does before a load): a checkpoint then
        holds the keys a resume's load expects, though the state itself is never used."""
        self.optimizer = optimizer
        _init_optim_state(optimizer)
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")

    # --- how a step's gradients travel -------------------------------------------------
    @contextmanager
    def no_sync(self, model: nn.Module, *, enabled: bool) -> Iterator[None]:
        """Before the first forward: pull the parameters once (after a start or a resume)."""
        if any(version < 0 for version in self.versions):
            self.pull()
        yield

    def reduce_gradients(self, model: nn.Module) -> None:
        """Nothing: each worker's gradient travels alone."""

    def sync_buffers(self, model: nn.Module) -> None:
        """Nothing: buffers (BatchNorm statistics) stay each worker's own."""

    def apply_update(self, update: Callable[[], None]) -> None:
        """Push this step's gradients to every server at once; take back what changed."""
        self.steps_pushed += 1
        step = self._state.step + 1 if self._state is not None else self.steps_pushed
        lr = float(self.optimizer.param_groups[0]["lr"]) if self.optimizer else None
        futures = []
        for index, shard in enumerate(self.shards):
            grads = {name: _gradient(param) for name, param in shard}
            self.stats["bytes_pushed"] += service.tensor_bytes(grads)
            args = (self.rank, step, self.versions[index], grads, lr, self.incarnation)
            futures.append(rpc.rpc_async(self.roles.servers[index], service.rpc_push, args=args))
        for index, future in enumerate(futures):
            applied, staleness, version, params = self._answer(index, future)
            self.staleness[staleness] = self.staleness.get(staleness, 0) + 1
            self.stats["dropped"] += not applied
            self._take(index, version, params)

    def pull(self) -> None:
        """Fetch the shards whose version changed since this worker last saw them."""
        step = self._state.step if self._state is not None else self.steps_pushed
        futures = [
            rpc.rpc_async(name, service.rpc_pull, args=(self.versions[index], self.rank, step))
            for index, name in enumerate(self.roles.servers)
        ]
        for index, future in enumerate(futures):
            self._take(index, *self._answer(index, future))

    def _answer(self, index: int, future):
        """A server's reply; a server that died is one line naming it (the run stops)."""
        try:
            return future.wait()
        except RuntimeError:
            rank = self.roles.server_rank(index)
            raise ServerLostError(
                f"parameter server {index} (rank {rank}) stopped answering at worker "
                f"{self.rank}'s push {self.steps_pushed}; the run stops: "
                "`scaletrain resume RUN_DIR` continues from the last checkpoint and the "
                "servers' shards (parallel.ps.shards_dir)"
            ) from None

    def _take(self, index: int, version: int, params: dict | None) -> None:
        self.versions[index] = version
        if params is None:
            return
        self.stats["bytes_pulled"] += service.tensor_bytes(params)
        with torch.no_grad():
            for name, param in self.shards[index]:
                param.copy_(params[name])

    @contextmanager
    def evaluation(self, model: nn.Module) -> Iterator[nn.Module]:
        """The newest parameters, in eval mode."""
        if self.shards:
            self.pull()
        with super().evaluation(model) as eval_model:
            yield eval_model

    def eval_shard(self) -> tuple[int, int]:
        """Each worker evaluates a whole split itself: no gather across workers."""
        return 0, 1

    # --- worker-local collectives -------------------------------------------------------
    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """This worker's value as if every worker had it: a step's loss share is 1/W of the
        worker's mean loss, so W x it is the mean; no worker waits for another."""
        if self.world_size == 1:
            return tensor
        return tensor.detach() * self.world_size

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        return [tensor]

    def any_flag(self, flag: bool) -> bool:
        return flag

    def barrier(self) -> None:
        """Start-up and resume only (the run directory exists before anyone reads it)."""
        rpc.api._barrier(self.roles.everyone)

    def evaluation_barrier(self) -> None:
        """None: each worker evaluates alone while the servers serve (a barrier would wait
        for them, and for a lost worker, forever)."""

    def worker_metrics(self) -> dict:
        return {**self.stats, "staleness": dict(sorted(self.staleness.items()))}


def _gradient(param: nn.Parameter) -> torch.Tensor:
    """A parameter without a gradient this step (unused) pushes zeros."""
    grad = param.grad
    return torch.zeros_like(param) if grad is None else grad.detach()
