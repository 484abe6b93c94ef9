"""Bits per byte of a language model's split: the evaluated loss in nats per token, times the
split's tokens over its text's UTF-8 bytes, over ln 2, computed here by hand; in memory and
from token shards (whose manifest records the text's bytes)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scaletrain.config import DataConfig, LossConfig, TextConfig
from scaletrain.data import build_data
from scaletrain.data.shards import prepare_shards
from scaletrain.metrics.language import bits_per_byte
from scaletrain.optim import build_loss
from scaletrain.parallel.strategy import SingleStrategy
from scaletrain.train.evaluate import evaluate_split
from scaletrain.train.precision import Precision

TEXTS = {
    "a.txt": "def naïve(x):\n    return x * 2  # ünïcödé: more bytes than characters\n" * 30,
    "b.txt": "class Café:\n    prix = '3,50 €'\n    def total(self): return 2\n" * 40,
}
CONTEXT = 16


def _corpus(tmp_path) -> DataConfig:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, text in TEXTS.items():
        (folder / name).write_text(text, encoding="utf-8")
    return DataConfig(
        source="text_corpus",
        path=str(folder),
        task="language_model",
        context_length=CONTEXT,
        val_fraction=0.5,
        test_fraction=0.0,
        text=TextConfig(vectorizer="bpe", vocab_size=300, min_frequency=1),
    )


class Bigram(nn.Module):
    def __init__(self, vocab_size: int):
        super().__init__()
        torch.manual_seed(0)
        self.table = nn.Embedding(vocab_size, vocab_size)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.table(token_ids)  # (B, T, V)


def _evaluate(bundle, model):
    strategy = SingleStrategy(torch.device("cpu"))
    loss_fn = build_loss(
        LossConfig(), task="language_model", num_outputs=bundle.spec.num_outputs, class_counts=None
    )
    return evaluate_split(
        model,
        bundle.val,
        spec=bundle.spec,
        loss_fn=loss_fn,
        precision=Precision.from_config("32", strategy.device),
        strategy=strategy,
        batch_size=4,
    )


def _by_hand(bundle, model, windows: tuple[torch.Tensor, torch.Tensor]) -> float:
    """The val file (the one whose start the first window decodes to): its tokens and bytes."""
    inputs, targets = windows
    tokenizer = bundle.preprocessor.encoder.tokenizer
    start = tokenizer.decode(inputs[0].tolist())
    (text,) = [text for text in TEXTS.values() if text.startswith(start)]
    num_tokens = len(tokenizer.encode([text])[0])
    num_bytes = len(text.encode("utf-8"))
    assert num_bytes > len(text) and num_bytes != num_tokens  # a real conversion
    with torch.no_grad():
        logits = model(inputs).double()
    nats = F.cross_entropy(logits.flatten(0, 1), targets.flatten()).item()
    return nats / math.log(2) * num_tokens / num_bytes


def test_bits_per_byte_in_memory_split(tmp_path):
    bundle = build_data(_corpus(tmp_path), seed=0)
    model = Bigram(bundle.spec.vocab_size)
    result = _evaluate(bundle, model)
    expected = _by_hand(bundle, model, (bundle.val.inputs, bundle.val.targets))
    assert result.metrics["bits_per_byte"] == pytest.approx(expected, rel=1e-6)  # fp32 logits
    assert result.metrics["bits_per_byte"] == pytest.approx(
        bits_per_byte(result.metrics["cross_entropy"], bundle.val.bytes_per_token), rel=1e-12
    )


def test_bits_per_byte_from_token_shards(tmp_path):
    cfg = _corpus(tmp_path)
    prepare_shards(cfg, tmp_path / "shards", seed=0, shard_bytes=1 << 16)
    bundle = build_data(
        DataConfig(source="shards", path=str(tmp_path / "shards"), context_length=CONTEXT),
        seed=0,
    )
    in_memory = build_data(cfg, seed=0)
    assert bundle.val.bytes_per_token == pytest.approx(in_memory.val.bytes_per_token, rel=1e-12)
    model = Bigram(bundle.spec.vocab_size)
    windows = [bundle.val.dataset[index] for index in range(len(bundle.val.dataset))]
    inputs = torch.stack([torch.as_tensor(item[0]) for item in windows])
    targets = torch.stack([torch.as_tensor(item[1]) for item in windows])
    result = _evaluate(bundle, model)
    expected = _by_hand(bundle, model, (inputs, targets))
    assert result.metrics["bits_per_byte"] == pytest.approx(expected, rel=1e-6)  # fp32 logits
