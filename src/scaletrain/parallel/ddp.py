"""DDP: every rank holds the whole model; gradients are averaged by bucketed all-reduce."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from scaletrain.parallel.distributed import DistributedStrategy, constant_buffer_names
from scaletrain.parallel.strategy import WrapRequest


class DDPStrategy(DistributedStrategy):
    """DistributedDataParallel with the bucket settings of `parallel.ddp`."""

    name = "ddp"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._synced_models: set[int] = set()  # models that ran a synced backward already

    def _place(self, model: nn.Module, blocks: list[nn.Module], request: WrapRequest):
        """Move to this rank's device and wrap in DDP."""
        settings = self.cfg.ddp
        # every gradient is all-reduced once per step (the static graph's first step: more)
        self.comm_bytes_per_step = float(
            sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        )
        model = model.to(self.device)
        constants = constant_buffer_names(model)
        if constants:  # DDP's forward broadcasts every other buffer (BatchNorm's statistics)
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                model, sorted(constants)
            )
        return DistributedDataParallel(
            model,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            bucket_cap_mb=settings.bucket_cap_mb,
            static_graph=settings.static_graph,
            gradient_as_bucket_view=settings.gradient_as_bucket_view,
        )

    @contextmanager
    def no_sync(self, model: nn.Module, *, enabled: bool) -> Iterator[None]:
        """DDP reads the flag in forward: the backward of a forward run here skips all-reduce.

        With `static_graph` the first step all-reduces every micro batch: torch 2.13's reducer
        records the graph on the first backward and fails an internal assert if that
        backward runs under `no_sync` (pytorch#143580). Averaging each micro batch's
        gradients gives the same sum, at the cost of extra traffic in that one step.
        """
        skip = enabled and (not model.static_graph or id(model) in self._synced_models)
        if not enabled:
            self._synced_models.add(id(model))
        with model.no_sync() if skip else nullcontext():
            yield

    @contextmanager
    def evaluation(self, model: nn.Module) -> Iterator[nn.Module]:
        """The inner module: DDP's forward may broadcast buffers, a collective per batch."""
        inner = model.module
        was_training = inner.training
        inner.eval()
        try:
            yield inner
        finally:
            inner.train(was_training)
