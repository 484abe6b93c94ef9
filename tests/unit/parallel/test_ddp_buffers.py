"""Under DDP only buffers that can change travel: BatchNorm's running statistics are
broadcast as before, the GPT's RoPE tables (non-persistent constants, ~0.46 MB per forward
for configs/gpt-stdlib.yaml) are not. A real one-process gloo group and a real
DistributedDataParallel; the 2-process numerics are the combination test's gpt DDP case."""

from __future__ import annotations

import torch
from torch import nn

from scaletrain.config import ParallelConfig
from scaletrain.config.models import GPTConfig
from scaletrain.models.gpt import GPT
from scaletrain.parallel import build_strategy
from scaletrain.parallel.distributed import constant_buffer_names


class GPTWithBatchNorm(nn.Module):
    """A tiny GPT (RoPE tables) beside a BatchNorm (running statistics): both kinds of buffer."""

    def __init__(self):
        super().__init__()
        cfg = GPTConfig(name="gpt", n_layer=2, n_head=2, d_model=16)
        self.gpt = GPT(cfg, vocab_size=32, num_outputs=32, context=8, task="language_model")
        self.norm = nn.BatchNorm1d(32)

    def forward(self, tokens):  # (B, T) -> (B, 32, T)
        return self.norm(self.gpt(tokens).transpose(1, 2))


ROPE = {f"gpt.blocks.{i}.attn.rotary.{table}" for i in range(2) for table in ("cos", "sin")}
STATISTICS = {"norm.running_mean", "norm.running_var", "norm.num_batches_tracked"}


def test_constants_are_the_buffers_no_checkpoint_holds():
    model = GPTWithBatchNorm()
    assert constant_buffer_names(model) == ROPE
    assert {name for name, _ in model.named_buffers()} == ROPE | STATISTICS


def test_ddp_broadcasts_running_statistics_but_not_rope_tables():
    strategy = build_strategy(ParallelConfig(strategy="ddp"), device_name="cpu")
    strategy.setup()
    try:
        model = strategy.wrap_model(GPTWithBatchNorm())
        # DDP's forward broadcasts `named_module_buffers` from rank 0 (broadcast_buffers)
        assert set(model.named_module_buffers) == STATISTICS
        assert model.will_sync_module_buffers()
        # the strategy's own end-of-step broadcast (under DDP and FSDP) sends the same ones
        sent = {id(buffer) for buffer in strategy.buffers_to_sync(model)}
        assert sent == {id(buffer) for buffer in model.module.norm.buffers()}
        # the ignored tables still work: a training forward and backward run
        model(torch.randint(0, 32, (4, 8))).sum().backward()
    finally:
        strategy.teardown()
