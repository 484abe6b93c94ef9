"""Language modeling: texts -> one token stream per split -> (context_length + 1)-token windows.

Sample i of a split covers stream positions [i*T, i*T + T + 1): its inputs are the first T
tokens and its targets the next T (the same window shifted by one). Files are split whole
(seeded, by file), the tokenizer is fit on the train files only, and each split's stream
is its files' tokens in sorted file order.
"""

from __future__ import annotations

import numpy as np
import torch

from scaletrain.config import DataConfig
from scaletrain.data.bundle import DataBundle, DataSpec, Split
from scaletrain.data.raw import RawData, RawTexts
from scaletrain.data.transforms.preprocess import Preprocessor
from scaletrain.data.transforms.split import split_groups
from scaletrain.data.transforms.text import TextEncoder
from scaletrain.data.transforms.tokenizer import SEQUENCE_KINDS
from scaletrain.errors import ConfigError, DataError


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id: uint16 up to 65536 tokens."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def num_windows(num_tokens: int, context_length: int) -> int:
    """Whole (context_length + 1)-token windows, stepping by context_length."""
    return max(0, (num_tokens - 1) // context_length)


def windows(stream: np.ndarray, context_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), both int64 (N, T): targets are inputs shifted by one token."""
    count = num_windows(len(stream), context_length)
    used = stream[: count * context_length + 1].astype(np.int64)
    inputs = used[:-1].reshape(count, context_length)
    targets = used[1:].reshape(count, context_length)
    return torch.from_numpy(np.ascontiguousarray(inputs)), torch.from_numpy(targets.copy())


def text_bytes(encoder: TextEncoder, texts) -> int:
    """UTF-8 bytes of the texts as the tokenizer sees them (normalized): bits per byte's
    denominator."""
    return sum(len(encoder.normalize(text).encode("utf-8")) for text in texts)


def language_model_spec(context_length: int, vocab_size: int, *, raw_columns=None) -> DataSpec:
    """Windows of token ids in, the next token's id out (in memory and from token shards)."""
    return DataSpec(
        task="language_model",
        input_shape=(context_length,),
        input_dtype=torch.int64,
        num_outputs=vocab_size,
        class_names=None,
        class_counts=None,
        vocab_size=vocab_size,
        input_kind="text",
        raw_columns=raw_columns,
    )


def check_vectorizer(cfg: DataConfig) -> None:
    """Language models need token ids, not n-gram vectors."""
    if cfg.text.vectorizer not in SEQUENCE_KINDS:
        raise ConfigError(
            f"data.text.vectorizer: `language_model` needs token ids ({', '.join(SEQUENCE_KINDS)}), "
            f"got {cfg.text.vectorizer!r}"
        )


def split_files(cfg: DataConfig, groups: np.ndarray, *, origin: str, seed: int):
    """Seeded split by group (file), never by window."""
    num_files = len(np.unique(groups))
    if num_files < 2 and (cfg.val_fraction or cfg.test_fraction):
        raise DataError(
            f"{origin}: one file cannot be split by file into train/val/test; add files "
            "or set data.val_fraction=0 and data.test_fraction=0"
        )
    try:
        return split_groups(
            groups, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=seed
        )
    except DataError:
        raise DataError(
            f"{origin}: {num_files} files are too few to split by file with "
            f"data.val_fraction={cfg.val_fraction} and data.test_fraction={cfg.test_fraction}"
        ) from None


def language_model_bundle(cfg: DataConfig, raw: RawData, *, seed: int) -> DataBundle:
    """Split by file, fit the tokenizer on train, cut each split's stream into windows."""
    if not isinstance(raw.inputs, RawTexts):
        raise ConfigError(
            f"data.task: `language_model` needs a text source (text_corpus, text_csv, "
            f"text_jsonl or builtin stdlib_text); {raw.origin} has no texts"
        )
    check_vectorizer(cfg)
    groups = raw.groups if raw.groups is not None else np.arange(len(raw.inputs))
    cut = split_files(cfg, groups, origin=raw.origin, seed=seed)
    encoder = TextEncoder.fit(cfg.text, raw.inputs.take(cut.train))
    length = cfg.context_length

    def make_split(name: str, rows: np.ndarray | None) -> Split | None:
        if rows is None:
            return None
        texts = raw.inputs.texts[rows]
        parts = encoder.token_ids(texts)
        stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        if num_windows(len(stream), length) == 0:
            raise DataError(
                f"{raw.origin}: the {name} split has {len(stream)} tokens, fewer than "
                f"data.context_length + 1 = {length + 1}; lower data.context_length"
            )
        inputs, targets = windows(stream, length)
        per_token = text_bytes(encoder, texts) / len(stream)
        return Split(inputs=inputs, targets=targets, bytes_per_token=per_token)

    spec = language_model_spec(length, encoder.vocab_size, raw_columns=raw.raw_columns)
    splits = [make_split(name, getattr(cut, name)) for name in ("train", "val", "test")]
    return DataBundle(spec, *splits, Preprocessor("none", encoder=encoder))
