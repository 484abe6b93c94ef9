"""Language modeling end to end on the data path: stdlib_text -> token shards -> windows ->
a tiny next-token model (test-only) whose loss drops far below the uniform baseline."""

from __future__ import annotations

import math

import torch
from torch import nn

from scaletrain.config import DataConfig, LossConfig, TextConfig
from scaletrain.data import BatchLoader, EvalLoader, build_data
from scaletrain.data.shards import prepare_shards
from scaletrain.optim import build_loss


class Bigram(nn.Module):
    """(B, T) ids -> (B, T, V) logits from the previous token only."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.table = nn.Embedding(vocab_size, vocab_size)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.table(token_ids)


def test_tiny_model_learns_from_token_shards(tmp_path):
    cfg = DataConfig(
        name="stdlib_text",
        task="language_model",
        context_length=64,
        text=TextConfig(vectorizer="byte"),
    )
    prepare_shards(cfg, tmp_path / "lm", seed=0, shard_bytes=1 << 18)
    bundle = build_data(
        DataConfig(source="shards", path=str(tmp_path / "lm"), context_length=64), seed=0
    )
    spec = bundle.spec
    assert spec.task == "language_model" and spec.num_outputs == spec.vocab_size == 257
    torch.manual_seed(0)
    model = Bigram(spec.vocab_size)
    loss_fn = build_loss(LossConfig(), task="classification", num_outputs=257, class_counts=None)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    loader = BatchLoader(
        bundle.train,
        global_batch_size=64,
        micro_batch_size=64,
        shuffle=True,
        seed=0,
        drop_last=True,
    )
    for step, batch in enumerate(loader):
        for inputs, targets in batch.micro_batches:
            assert inputs.shape == targets.shape == (len(inputs), 64)
            optimizer.zero_grad()
            loss_fn(model(inputs), targets).backward()  # (B, T, V) logits, (B, T) targets
            optimizer.step()
        if step == 150:
            break
    with torch.no_grad():
        losses = [loss_fn(model(x), y) for x, y in EvalLoader(bundle.val, batch_size=256)]
    val_loss = float(torch.stack(losses).mean())
    assert val_loss < 0.55 * math.log(257), val_loss  # uniform guessing: log(257) = 5.55
