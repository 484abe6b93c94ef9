"""Prepared shards of text and categorical sources hold exactly the in-memory tensors, and a
run trained on shards predicts raw files exactly as the in-memory run does (the encoder and
statistics travel in the manifest to the run's preprocess.json)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scaletrain.config import DataConfig, TableConfig, TextConfig
from scaletrain.data import build_data
from scaletrain.data.shards import prepare_shards

WORDS = ["alpha", "beta", "gamma", "délta", "Eps"]


def write_sources(root) -> None:
    generator = np.random.default_rng(0)
    texts = [" ".join(generator.choice(WORDS, 6)) for _ in range(90)]
    labels = [["x", "y", "z"][index % 3] for index in range(90)]
    rows = [f"{text},{label}" for text, label in zip(texts, labels, strict=True)]
    (root / "t.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    records = [json.dumps({"text": t, "label": y}) for t, y in zip(texts, labels, strict=True)]
    (root / "t.jsonl").write_text("\n".join(records) + "\n")
    cells = [
        f"{'' if i % 7 == 0 else i * 0.5},{['r', 'g', 'b'][i % 3] if i % 5 else ''},{i % 4},"
        f"{['no', 'yes'][(i // 3) % 2]}"
        for i in range(120)
    ]
    (root / "c.csv").write_text("x,color,size,label\n" + "\n".join(cells) + "\n")


def table(root, **options) -> DataConfig:
    return DataConfig(source="csv", path=str(root / "c.csv"), table=TableConfig(**options))


CONFIGS = {
    "text_csv bpe": lambda root: DataConfig(
        source="text_csv",
        path=str(root / "t.csv"),
        text=TextConfig(vectorizer="bpe", vocab_size=300, max_length=16),
    ),
    "text_csv tfidf": lambda root: DataConfig(
        source="text_csv",
        path=str(root / "t.csv"),
        text=TextConfig(vectorizer="tfidf", ngram_max=2),
    ),
    "text_jsonl char": lambda root: DataConfig(
        source="text_jsonl",
        path=str(root / "t.jsonl"),
        text=TextConfig(vectorizer="char", lowercase=True, strip_accents=True),
    ),
    "csv one-hot median": lambda root: table(root, categorical=["color"], impute="median"),
    "csv index mean minmax": lambda root: table(
        root, categorical=["color"], impute="mean", categorical_encoding="index"
    ).model_copy(update={"normalize": "minmax"}),
}


def split_tensors(split) -> tuple[torch.Tensor, torch.Tensor]:
    if split.inputs is not None:
        return split.inputs, split.targets
    inputs, targets = split.dataset.__getitems__(list(range(len(split))))
    return split.transform(inputs), targets


@pytest.mark.parametrize("name", list(CONFIGS))
def test_text_and_categorical_shards_equal_the_in_memory_tensors(tmp_path, name):
    write_sources(tmp_path)
    cfg = CONFIGS[name](tmp_path)
    prepare_shards(cfg, tmp_path / "shards", seed=3, shard_bytes=300)  # many shards
    memory = build_data(cfg, seed=3)
    shards = build_data(
        DataConfig(source="shards", path=str(tmp_path / "shards"), normalize=cfg.normalize),
        seed=3,
    )
    assert shards.spec == memory.spec
    assert len(list((tmp_path / "shards" / "train").glob("*.inputs.npy"))) > 1
    for split in ("train", "val", "test"):
        inputs, targets = split_tensors(getattr(shards, split))
        expected = getattr(memory, split)
        assert inputs.dtype == expected.inputs.dtype, split
        assert torch.equal(inputs, expected.inputs), split
        assert torch.equal(targets, expected.targets), split


def test_a_run_on_shards_predicts_raw_files_like_the_in_memory_run(tmp_path):
    from scaletrain import api

    write_sources(tmp_path)
    data = {
        "source": "csv",
        "path": str(tmp_path / "c.csv"),
        "table": {"categorical": ["color"], "impute": "median"},
    }
    prepare_shards(DataConfig(**data), tmp_path / "shards", seed=0, shard_bytes=200)

    def train(name: str, data: dict):
        return api.train(
            {
                "run": {"name": name, "out_dir": str(tmp_path / "runs")},
                "data": data,
                "model": {"name": "mlp", "hidden": [8]},
                "train": {"max_epochs": 2, "batch_size": 16, "device": "cpu", "precision": "32"},
                "log": {"progress": False, "tensorboard": False, "report": False},
                "checkpoint": {"keep_last": 1},
            }
        )

    memory = train("memory", data)
    shards = train("shards", {"source": "shards", "path": str(tmp_path / "shards")})
    assert memory.metrics == shards.metrics
    saved = json.loads((shards.run_dir / "preprocess.json").read_text())
    assert saved == json.loads((memory.run_dir / "preprocess.json").read_text())
    # an unknown category, a missing number and a missing category: encoded with the saved state
    (tmp_path / "new.csv").write_text("x,color,size\n1.5,r,2\n,zz,3\n9,,1\n")
    expected = api.predict(memory.run_dir, tmp_path / "new.csv")
    got = api.predict(shards.run_dir, tmp_path / "new.csv")
    assert got["class_names"] == expected["class_names"] == ["no", "yes"]
    assert np.array_equal(got["prob"], expected["prob"])
    assert not np.allclose(got["prob"][0], got["prob"][1])  # the rows are told apart
