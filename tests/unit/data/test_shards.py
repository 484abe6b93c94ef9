"""Prepared shards: manifest, streamed statistics, token windows across shard boundaries,
images as uint8, integrity errors, and a failed prepare leaving nothing behind."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scaletrain.config import DataConfig, ShardsConfig, TextConfig
from scaletrain.data import build_data
from scaletrain.data.shards import FORMAT_VERSION, parse_size, prepare_shards, read_manifest
from scaletrain.data.shards.reader import TokenWindows
from scaletrain.data.transforms.stats import RunningMoments
from scaletrain.errors import DataError, UserError


def all_of(split) -> tuple[torch.Tensor, torch.Tensor]:
    if split.inputs is not None:
        return split.inputs, split.targets
    inputs, targets = split.dataset.__getitems__(list(range(len(split))))
    return (split.transform(inputs) if split.transform else inputs), targets


def test_manifest_lists_every_shard_with_size_and_checksum(tmp_path):
    cfg = DataConfig(name="wine")
    manifest = prepare_shards(cfg, tmp_path / "wine", seed=0, shard_bytes=2000)
    assert manifest == read_manifest(tmp_path / "wine")
    assert manifest["format_version"] == FORMAT_VERSION and manifest["kind"] == "samples"
    train = manifest["splits"]["train"]
    sizes = [shard["num_samples"] for shard in train["shards"]]
    assert len(sizes) > 3 and len(set(sizes[:-1])) == 1 and sizes[-1] <= sizes[0]  # fixed size
    assert sum(sizes) == train["num_samples"] == len(build_data(cfg, seed=0).train)
    for shard in train["shards"]:
        entry = shard["files"]["inputs"]
        path = tmp_path / "wine" / entry["path"]
        assert path.stat().st_size == entry["bytes"]
        import hashlib

        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert np.load(path, mmap_mode="r").shape == (shard["num_samples"], 13)
    assert sorted(p.name for p in (tmp_path).iterdir()) == ["wine"]  # no staging left over
    for path in (tmp_path / "wine", tmp_path / "wine" / "manifest.json"):  # for sharing
        assert path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644), path
    # the loader reads data.shards.read_mib at a time: 13 float32 features + an int64 label
    read = DataConfig(source="shards", path=str(tmp_path / "wine"), shards={"read_mib": 1})
    assert build_data(read, seed=0).train.dataset.read_rows == (1 << 20) // (13 * 4 + 8)


def test_streamed_statistics_equal_the_in_memory_ones():
    generator = np.random.default_rng(0)
    values = generator.normal(loc=1e3, scale=3.0, size=(1000, 4)).astype(np.float32)
    whole = RunningMoments(is_image=False)
    whole.update(values)
    chunked = RunningMoments(is_image=False)
    for start in range(0, 1000, 37):
        chunked.update(values[start : start + 37])
    reference = values.astype(np.float64)
    for moments in (whole, chunked):
        shift, scale = moments.shift_scale("standardize")
        np.testing.assert_allclose(shift.numpy(), reference.mean(0), rtol=1e-13)
        np.testing.assert_allclose(scale.numpy(), reference.std(0), rtol=1e-10)
        low, width = moments.shift_scale("minmax")
        np.testing.assert_array_equal(low.numpy(), reference.min(0))
        np.testing.assert_allclose(width.numpy(), np.ptp(reference, axis=0), rtol=1e-13)
    images = RunningMoments(is_image=True)
    pixels = generator.random((20, 3, 4, 4))
    images.update(pixels[:7])
    images.update(pixels[7:])
    shift, _ = images.shift_scale("standardize")
    np.testing.assert_allclose(shift.reshape(3).numpy(), pixels.mean(axis=(0, 2, 3)), rtol=1e-13)


def test_images_are_stored_as_uint8_and_read_back_identically(tmp_path):
    from PIL import Image

    generator = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for index in range(12):
            pixels = generator.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / label / f"{index}.png")
    cfg = DataConfig(source="image_folder", path=str(tmp_path / "images"))
    manifest = prepare_shards(cfg, tmp_path / "shards", seed=0, shard_bytes=500)
    assert manifest["fields"]["inputs"]["dtype"] == "uint8"
    memory = build_data(cfg, seed=0)
    shards = build_data(DataConfig(source="shards", path=str(tmp_path / "shards")), seed=0)
    assert shards.spec == memory.spec and shards.spec.input_shape == (3, 6, 5)
    for name in ("train", "val", "test"):
        inputs, targets = all_of(getattr(shards, name))
        expected = getattr(memory, name)
        assert torch.equal(inputs, expected.inputs)
        assert torch.equal(targets, expected.targets)


@pytest.mark.parametrize("shard_bytes", [64, 1000, 1 << 20])
def test_token_windows_cross_shard_boundaries(tmp_path, shard_bytes):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    generator = np.random.default_rng(1)
    for index in range(9):
        words = generator.choice(["alpha", "beta", "gamma", "delta\n", "é"], size=120)
        (corpus / f"{index:02d}.txt").write_text(" ".join(words))
    cfg = DataConfig(
        source="text_corpus",
        path=str(corpus),
        context_length=16,
        text=TextConfig(vectorizer="bpe", vocab_size=270),
    )
    manifest = prepare_shards(cfg, tmp_path / "lm", seed=3, shard_bytes=shard_bytes)
    assert manifest["kind"] == "tokens" and manifest["token_dtype"] == "uint16"
    memory = build_data(cfg, seed=3)
    for context_length in (16, 5):  # windows are cut at read time: any length works
        read = cfg.model_copy(
            update={
                "source": "shards",
                "path": str(tmp_path / "lm"),
                "context_length": context_length,
            }
        )
        shards = build_data(read, seed=3)
        assert shards.spec.input_shape == (context_length,)
        for name in ("train", "val", "test"):
            inputs, targets = all_of(getattr(shards, name))
            if context_length == 16:
                assert torch.equal(inputs, getattr(memory, name).inputs)
                assert torch.equal(targets, getattr(memory, name).targets)
            assert torch.equal(inputs[:, 1:], targets[:, :-1])
            assert inputs.dtype == torch.int64
    windows = TokenWindows(
        tmp_path / "lm", manifest["splits"]["train"], context_length=7, max_open=1
    )
    stream = np.concatenate([windows.read(0, manifest["splits"]["train"]["num_tokens"])])
    assert windows.read_rows == (8 << 20) // (2 * 7 * 8)  # int64 inputs and targets
    for index in (0, 3, len(windows) - 1):
        inputs, targets = windows[index]
        assert np.array_equal(inputs.numpy(), stream[index * 7 : index * 7 + 7])
        assert np.array_equal(targets.numpy(), stream[index * 7 + 1 : index * 7 + 8])


def test_corrupt_truncated_and_newer_shards_are_refused(tmp_path):
    prepare_shards(DataConfig(name="iris"), tmp_path / "s", seed=0, shard_bytes=400)
    read = DataConfig(source="shards", path=str(tmp_path / "s"))
    manifest = read_manifest(tmp_path / "s")
    victim = tmp_path / "s" / manifest["splits"]["val"]["shards"][0]["files"]["inputs"]["path"]
    original = victim.read_bytes()
    damaged = bytearray(original)
    damaged[-1] ^= 0xFF
    victim.write_bytes(bytes(damaged))
    with pytest.raises(DataError) as caught:
        build_data(read, seed=0)
    assert str(caught.value).startswith(f"{victim}: SHA-256 does not match manifest.json")
    build_data(read.model_copy(update={"shards": ShardsConfig(verify="size")}), seed=0)  # size only
    victim.write_bytes(original[:-4])
    with pytest.raises(DataError, match=f"{victim}: shard has {len(original) - 4} bytes"):
        build_data(read.model_copy(update={"shards": ShardsConfig(verify="size")}), seed=0)
    victim.unlink()
    with pytest.raises(DataError, match=f"{victim}: shard listed in manifest.json is missing"):
        build_data(read, seed=0)
    victim.write_bytes(original)
    build_data(read, seed=0)
    newer = {**manifest, "format_version": FORMAT_VERSION + 1}
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(newer))
    with pytest.raises(DataError, match=r"manifest.json: format version 2 is newer than this"):
        build_data(read, seed=0)
    with pytest.raises(DataError, match="no manifest.json"):
        build_data(read.model_copy(update={"path": str(tmp_path)}), seed=0)


def test_failed_prepare_writes_nothing_and_existing_output_is_kept(tmp_path):
    (tmp_path / "bad.csv").write_text("a,label\n1,0\n2\n")
    cfg = DataConfig(source="csv", path=str(tmp_path / "bad.csv"))
    with pytest.raises(DataError, match="bad.csv:3: 1 values"):
        prepare_shards(cfg, tmp_path / "out" / "shards", seed=0, shard_bytes=100)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]
    prepare_shards(DataConfig(name="iris"), tmp_path / "iris", seed=0, shard_bytes=400)
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        prepare_shards(DataConfig(name="iris"), tmp_path / "iris", seed=0, shard_bytes=400)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    with pytest.raises(UserError, match="not a shard folder"):
        prepare_shards(
            DataConfig(name="iris"), tmp_path / "notes", seed=0, shard_bytes=400, overwrite=True
        )
    assert (tmp_path / "notes" / "a.txt").read_text() == "mine"


def test_parse_size():
    assert parse_size("256MB") == 256 * 10**6 and parse_size("64MiB") == 64 * 2**20
    assert parse_size("1.5GB") == 1_500_000_000 and parse_size("4096") == 4096
    with pytest.raises(DataError, match="--shard-size: '12 parsecs' is not a size"):
        parse_size("12 parsecs")
