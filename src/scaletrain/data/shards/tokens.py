"""Language-model shards: texts split by file -> tokenizer fit on train -> token-stream shards.

A ``text_corpus`` is read lazily, one file at a time, in the tokenizer's training pass and
again while tokenizing, so preparing it needs memory for one file and one shard only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scaletrain.config import DataConfig
from scaletrain.data.lm import (
    check_vectorizer,
    language_model_spec,
    split_files,
    text_bytes,
    token_dtype,
)
from scaletrain.data.raw import RawTexts
from scaletrain.data.shards.format import SPLITS
from scaletrain.data.shards.writer import TokenShardWriter
from scaletrain.data.sources.registry import SOURCES
from scaletrain.data.sources.text_files import corpus_files, read_text
from scaletrain.data.transforms.text import TextEncoder
from scaletrain.errors import ConfigError, DataError


class CorpusTexts:
    """The files of a corpus as a sequence of texts, each read when asked for."""

    def __init__(self, files: list[Path]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> str:
        return read_text(self.files[index])


def _texts_and_groups(cfg: DataConfig):
    if cfg.source == "text_corpus":
        files = corpus_files(cfg.path)
        return CorpusTexts(files), np.arange(len(files)), str(cfg.path)
    raw = SOURCES[cfg.source](cfg)
    if not isinstance(raw.inputs, RawTexts):
        raise ConfigError(
            f"data.task: `language_model` needs a text source; {raw.origin} has no texts"
        )
    groups = raw.groups if raw.groups is not None else np.arange(len(raw.inputs))
    return raw.inputs.texts, groups, raw.origin


def token_shards(cfg: DataConfig, staging: Path, seed: int, shard_bytes: int) -> dict:
    """Manifest body of a token-stream shard folder (shards are written to ``staging``)."""
    check_vectorizer(cfg)
    texts, groups, origin = _texts_and_groups(cfg)
    cut = split_files(cfg, groups, origin=origin, seed=seed)
    encoder = TextEncoder.fit(cfg.text, (texts[int(row)] for row in cut.train))
    dtype = token_dtype(encoder.vocab_size)
    splits = {}
    for name in SPLITS:
        rows = getattr(cut, name)
        if rows is None:
            continue
        writer = TokenShardWriter(staging, name, dtype=dtype, shard_bytes=shard_bytes)
        num_text_bytes = 0
        for row in rows:
            text = texts[int(row)]
            writer.append(encoder.token_ids([text])[0])
            num_text_bytes += text_bytes(encoder, [text])
        splits[name] = writer.close(context_length=cfg.context_length)
        splits[name]["num_text_bytes"] = num_text_bytes  # bits per byte's denominator
        if splits[name]["num_samples"] == 0:
            raise DataError(
                f"{origin}: the {name} split has {splits[name]['num_tokens']} tokens, fewer "
                f"than data.context_length + 1 = {cfg.context_length + 1}"
            )
    spec = language_model_spec(cfg.context_length, encoder.vocab_size)
    return {
        "kind": "tokens",
        "spec": spec.to_dict(),
        "token_dtype": dtype.name,
        "context_length": cfg.context_length,
        "splits": splits,
        "statistics": {"count": 0},
        "encoder": encoder.state_dict(),
        "source": cfg.model_dump(mode="json"),
        "seed": seed,
    }
