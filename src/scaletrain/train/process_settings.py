"""Process-wide torch settings a run asks for (intra-op threads, deterministic algorithms),
and putting them back when the run returns."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from scaletrain.config import TrainConfig


def apply_process_settings(cfg: TrainConfig) -> None:
    """Deterministic algorithms and intra-op CPU threads, where the config asks.

    Small models gain little from a second thread and lose most of their speed when the
    cores are shared: every op waits at a barrier for a thread that is not running
    (bench/README.md: 12x on the digits CNN on a loaded 2-core machine).
    """
    if (
        torch.are_deterministic_algorithms_enabled() != cfg.deterministic
        or torch.is_deterministic_algorithms_warn_only_enabled()
    ):  # only on a change: the call imports torch._inductor's config (0.6-1.7 s here)
        torch.use_deterministic_algorithms(cfg.deterministic, warn_only=False)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)


@contextlib.contextmanager
def restored_process_settings() -> Iterator[None]:
    """What `apply_process_settings` changes belongs to the caller's process too (a notebook,
    a test session): put it back when the run returns, so one run's `train.num_threads` does
    not slow or change the numerics of whatever the process runs next."""
    threads = torch.get_num_threads()
    deterministic = _deterministic_mode()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        if _deterministic_mode() != deterministic:
            torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])


def _deterministic_mode() -> tuple[bool, bool]:
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
