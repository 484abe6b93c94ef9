"""Strategies: how a model and its data are spread over processes and devices."""

from __future__ import annotations

from scaletrain.config import ParallelConfig
from scaletrain.errors import ConfigError
from scaletrain.parallel.auto import AutoStrategy
from scaletrain.parallel.compile import FirstStepClock, compile_regions
from scaletrain.parallel.ddp import DDPStrategy
from scaletrain.parallel.distributed import DistributedStrategy
from scaletrain.parallel.env import LaunchEnv, read_launch_env
from scaletrain.parallel.fsdp import FSDPStrategy
from scaletrain.parallel.local_sgd import DiLoCoStrategy, LocalSGDStrategy
from scaletrain.parallel.memory_plan import optimizer_states_per_param
from scaletrain.parallel.mesh import MESH_DIMS, ParallelDims, build_device_mesh, resolve_dims
from scaletrain.parallel.pipeline import PipelineStrategy
from scaletrain.parallel.ps.worker import AsyncPSStrategy
from scaletrain.parallel.strategy import (
    BaseStrategy,
    SingleStrategy,
    Strategy,
    WrapRequest,
    resolve_device,
)
from scaletrain.parallel.tensor_parallel import TP_PLANS, full_value, local_value

STRATEGIES = {
    "ddp": DDPStrategy,
    "fsdp": FSDPStrategy,
    "auto": AutoStrategy,
    "async_ps": AsyncPSStrategy,
    "local_sgd": LocalSGDStrategy,
    "diloco": DiLoCoStrategy,
    "pp": PipelineStrategy,
}


def build_strategy(cfg: ParallelConfig, *, device_name: str) -> Strategy:
    """The Strategy named by `parallel.strategy`, on the device named by `train.device`.

    `auto` in a single process is `single`; under torchrun it joins the group and lets
    the memory planner choose when the model is wrapped. `fsdp` with
    `parallel.dims.pp > 1` is the pipeline composed on the mesh (`pipeline_mesh.py`).
    Call `setup()` before use.
    """
    env = read_launch_env()
    device = resolve_device(device_name, local_rank=env.local_rank)
    if cfg.strategy == "fsdp" and cfg.dims.pp > 1:
        return PipelineStrategy(cfg, env=env, device=device)
    if cfg.strategy == "single" or (cfg.strategy == "auto" and env.world_size == 1):
        if env.world_size > 1:
            raise ConfigError(
                f"parallel.strategy: `single` trains in one process, but {env.world_size} were "
                "launched; use ddp, fsdp or auto, or launch one process"
            )
        return SingleStrategy(device, cfg)
    return STRATEGIES[cfg.strategy](cfg, env=env, device=device)


__all__ = [
    "MESH_DIMS",
    "STRATEGIES",
    "TP_PLANS",
    "AsyncPSStrategy",
    "AutoStrategy",
    "BaseStrategy",
    "DDPStrategy",
    "DiLoCoStrategy",
    "DistributedStrategy",
    "FSDPStrategy",
    "FirstStepClock",
    "LaunchEnv",
    "LocalSGDStrategy",
    "ParallelDims",
    "PipelineStrategy",
    "SingleStrategy",
    "Strategy",
    "WrapRequest",
    "build_device_mesh",
    "build_strategy",
    "compile_regions",
    "full_value",
    "local_value",
    "optimizer_states_per_param",
    "read_launch_env",
    "resolve_device",
    "resolve_dims",
]
