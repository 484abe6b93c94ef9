"""Tokenizers for token-id sequences: ``byte``, ``char`` and byte-level ``bpe``.

Id 0 is padding in all three. ``byte`` needs no fitting (ids 1..256 are bytes + 1); ``char``
keeps the train split's most frequent characters (id 1 = unknown); ``bpe`` is a Hugging Face
``tokenizers`` byte-level BPE trained on the train texts, saved as its own JSON, so any text
(also unseen characters) round-trips exactly through ``encode`` and ``decode``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np

from scaletrain.config import TextConfig
from scaletrain.errors import ConfigError

SEQUENCE_KINDS = ("bpe", "char", "byte")
PAD = "<pad>"


class ByteTokenizer:
    """UTF-8 bytes; id = byte + 1."""

    kind = "byte"
    vocab_size = 257

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        return [
            np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64) + 1
            for text in texts
        ]

    def decode(self, ids) -> str:
        return bytes(int(i) - 1 for i in ids if i > 0).decode("utf-8", errors="replace")

    def state_dict(self) -> dict:
        return {"kind": self.kind}


class CharTokenizer:
    """Characters seen in train (most frequent first); id 1 stands for any other character."""

    kind = "char"

    def __init__(self, characters: list[str]):
        self.characters = characters
        self.lookup = {character: index + 2 for index, character in enumerate(characters)}
        self.vocab_size = len(characters) + 2

    @classmethod
    def fit(cls, texts: Iterable[str], *, vocab_size: int, min_frequency: int) -> CharTokenizer:
        counts = Counter()
        for text in texts:
            counts.update(text)
        ranked = sorted(counts, key=lambda character: (-counts[character], character))
        kept = [c for c in ranked if counts[c] >= min_frequency][: max(0, vocab_size - 2)]
        return cls(kept)

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        lookup = self.lookup
        return [np.array([lookup.get(c, 1) for c in text], dtype=np.int64) for text in texts]

    def decode(self, ids) -> str:
        return "".join(self.characters[int(i) - 2] if i >= 2 else "" for i in ids)

    def state_dict(self) -> dict:
        return {"kind": self.kind, "characters": self.characters}


class BpeTokenizer:
    """Byte-level BPE from Hugging Face ``tokenizers``; ``<pad>`` is id 0."""

    kind = "bpe"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()

    @classmethod
    def fit(cls, texts: Iterable[str], *, vocab_size: int, min_frequency: int) -> BpeTokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        if vocab_size < len(alphabet) + 1:
            raise ConfigError(
                f"data.text.vocab_size: byte-level BPE needs at least {len(alphabet) + 1} "
                f"tokens (256 bytes + padding), got {vocab_size}"
            )
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=[PAD],  # first special token: id 0
            initial_alphabet=alphabet,
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer=trainer)
        return cls(tokenizer)

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        return [np.asarray(encoding.ids, dtype=np.int64) for encoding in encodings]

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids if i > 0], skip_special_tokens=True)

    def state_dict(self) -> dict:
        return {"kind": self.kind, "json": self.tokenizer.to_str()}


def build_tokenizer(cfg: TextConfig, texts: Iterable[str]):
    """The tokenizer named by ``cfg.vectorizer``, fit on the (normalized) train texts."""
    if cfg.vectorizer == "byte":
        return ByteTokenizer()
    options = {"vocab_size": cfg.vocab_size, "min_frequency": cfg.min_frequency}
    if cfg.vectorizer == "char":
        return CharTokenizer.fit(texts, **options)
    return BpeTokenizer.fit(texts, **options)


def tokenizer_from_state(state: dict):
    """Rebuild a tokenizer saved by ``state_dict``."""
    if state["kind"] == "byte":
        return ByteTokenizer()
    if state["kind"] == "char":
        return CharTokenizer(state["characters"])
    from tokenizers import Tokenizer

    try:
        return BpeTokenizer(Tokenizer.from_str(state["json"]))
    except Exception as exc:  # tokenizers raises a bare Exception for a damaged JSON
        raise ValueError(f"BPE tokenizer JSON unreadable ({exc})") from None
