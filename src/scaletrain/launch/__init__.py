"""Launching: N local workers and multi-node jobs through torchrun's elastic agent."""

from scaletrain.launch.torchrun import (
    LaunchError,
    LaunchOptions,
    inside_torchrun,
    launch,
    needs_launch,
    parse_nnodes,
    parse_nproc,
    quiet_unless_rank_zero,
    record_worker_error,
    torchrun_args,
)

__all__ = [
    "LaunchError",
    "LaunchOptions",
    "inside_torchrun",
    "launch",
    "needs_launch",
    "parse_nnodes",
    "parse_nproc",
    "quiet_unless_rank_zero",
    "record_worker_error",
    "torchrun_args",
]
