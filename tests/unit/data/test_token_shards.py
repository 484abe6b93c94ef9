"""Token-stream shards: uint16 up to 65,536 ids and uint32 above (read back as int64 exactly),
and a ``text_corpus`` given as a glob instead of a folder."""

from __future__ import annotations

import json

import numpy as np
import torch

from scaletrain.config import DataConfig, TextConfig
from scaletrain.data import build_data
from scaletrain.data.lm import token_dtype
from scaletrain.data.shards import prepare_shards
from scaletrain.data.shards.reader import TokenWindows
from scaletrain.data.shards.writer import TokenShardWriter


def test_token_dtype_is_the_smallest_that_holds_every_id():
    assert token_dtype(257) == np.uint16 and token_dtype(2**16) == np.uint16
    assert token_dtype(2**16 + 1) == np.uint32


def test_uint32_token_ids_round_trip_across_shards(tmp_path):
    stream = np.random.default_rng(0).integers(0, 100_000, size=1000)  # ids above 65,535
    assert stream.max() > 2**16
    writer = TokenShardWriter(tmp_path, "train", dtype=token_dtype(100_000), shard_bytes=400)
    for start in range(0, len(stream), 77):  # appends that straddle shard boundaries
        writer.append(stream[start : start + 77])
    split = writer.close(context_length=9)
    assert len(split["shards"]) == 10 and split["num_tokens"] == 1000
    stored = np.load(tmp_path / split["shards"][0]["files"]["tokens"]["path"], mmap_mode="r")
    assert stored.dtype == np.uint32
    windows = TokenWindows(tmp_path, split, context_length=9, max_open=2)
    assert len(windows) == 999 // 9
    inputs, targets = windows.__getitems__(list(range(len(windows))))
    assert inputs.dtype == torch.int64
    expected = np.stack([stream[i * 9 : i * 9 + 10] for i in range(len(windows))])
    assert np.array_equal(inputs.numpy(), expected[:, :-1])
    assert np.array_equal(targets.numpy(), expected[:, 1:])


def test_text_corpus_from_a_glob(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "nested").mkdir(parents=True)
    generator = np.random.default_rng(2)
    for index in range(8):
        folder = corpus / "nested" if index % 2 else corpus
        text = " ".join(generator.choice(["def", "class", "return", "x\n"], size=150))
        (folder / f"{index:02d}.txt").write_text(text)
    (corpus / "notes.md").write_text("not part of the glob " * 50)
    text = TextConfig(vectorizer="byte")
    options = {"source": "text_corpus", "context_length": 32, "text": text}
    folder_cfg = DataConfig(path=str(corpus), **options)
    glob_cfg = DataConfig(path=str(corpus / "**" / "*.txt"), **options)
    prepare_shards(glob_cfg, tmp_path / "glob", seed=1, shard_bytes=1000)
    prepare_shards(folder_cfg, tmp_path / "folder", seed=1, shard_bytes=1000)
    manifests = [
        json.loads((tmp_path / name / "manifest.json").read_text()) for name in ("glob", "folder")
    ]
    total = {
        name: sum(m["splits"][s]["num_tokens"] for s in m["splits"])
        for name, m in zip(("glob", "folder"), manifests, strict=True)
    }
    txt_bytes = sum(path.stat().st_size for path in corpus.rglob("*.txt"))
    assert total["glob"] == txt_bytes  # byte tokens: exactly the eight .txt files
    assert total["folder"] == txt_bytes + (corpus / "notes.md").stat().st_size
    memory = build_data(glob_cfg, seed=1)
    shards = build_data(
        DataConfig(source="shards", path=str(tmp_path / "glob"), context_length=32), seed=1
    )
    for name in ("train", "val", "test"):
        inputs, _ = getattr(shards, name).dataset.__getitems__(
            list(range(len(getattr(shards, name))))
        )
        assert torch.equal(inputs, getattr(memory, name).inputs), name
