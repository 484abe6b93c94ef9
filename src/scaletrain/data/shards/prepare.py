"""``scaletrain prepare``: any source -> a folder of fixed-size shards and a manifest.

Samples: the usual pipeline (split, encoders fit on train) with scaling left out; each split
is written as inputs/targets shards, then one streaming pass over the train shards computes
the scaling statistics stored in the manifest. Language modeling: files are split whole,
the tokenizer is fit on the train files, and each split's tokens stream file by file into
uint16/uint32 shards. Everything is written to a hidden staging folder that is renamed to
``out`` only after ``manifest.json``, so a failure leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from scaletrain.config import DataConfig
from scaletrain.data.build import build_data
from scaletrain.data.lm import token_dtype
from scaletrain.data.shards.format import MANIFEST, SPLITS
from scaletrain.data.shards.reader import ShardSamples
from scaletrain.data.shards.tokens import token_shards
from scaletrain.data.shards.writer import SampleShardWriter, write_manifest
from scaletrain.data.transforms.stats import RunningMoments
from scaletrain.errors import ConfigError, UserError
from scaletrain.fileio import current_umask, fsync_dir

CHUNK_ROWS = 4096  # samples handed to a writer at a time


def prepare_shards(
    cfg: DataConfig, out: Path, *, seed: int, shard_bytes: int, overwrite: bool = False
) -> dict:
    """Write the shards of ``cfg``'s data to ``out``; returns the manifest.

    Args:
        cfg: the ``data`` section naming the source (anything but shards/tensors).
        out: folder to create (refused if it exists, unless ``overwrite``).
        seed: seeds the train/val/test split, as ``run.seed`` does for training.
        shard_bytes: target bytes per shard file (the last shard of a split is smaller).
    """
    if cfg.source in ("shards", "tensors"):
        raise ConfigError(f"data.source: `{cfg.source}` cannot be prepared; name a file source")
    out = Path(out)
    _check_out(out, overwrite=overwrite)
    if cfg.task == "language_model" or cfg.source == "text_corpus":
        return _publish(out, lambda staging: token_shards(cfg, staging, seed, shard_bytes))
    bundle = build_data(cfg.model_copy(update={"normalize": "none"}), seed=seed)  # may raise
    return _publish(out, lambda staging: _sample_shards(bundle, cfg, staging, seed, shard_bytes))


def _check_out(out: Path, *, overwrite: bool) -> None:
    if not out.exists():
        return
    if not overwrite:
        raise UserError(f"--out: {out} already exists; pass --overwrite to replace it")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise UserError(f"--out: refusing to overwrite {out}: it is not a shard folder")


def _publish(out: Path, write) -> dict:
    """Run ``write(staging)``, then swap the finished staging folder in as ``out``."""
    new_parent = not out.parent.exists()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.staging-"))
    try:
        # mkdtemp makes 0700; a prepared folder is for sharing, as mkdir would make it
        staging.chmod(0o777 & ~current_umask())
        manifest = write_manifest(staging, write(staging))
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
        fsync_dir(out.parent)  # the directory commit, as a checkpoint's
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if new_parent:
            shutil.rmtree(out.parent, ignore_errors=True)  # leave no trace of a failed run
        raise
    return manifest


def _fields(bundle) -> dict[str, dict]:
    """Storage dtypes: images as uint8 (divided by 255 when read), token ids as uint16/32."""
    spec, train = bundle.spec, bundle.train
    inputs = {"dtype": "float32", "shape": list(spec.input_shape)}
    if spec.input_kind == "image":
        inputs.update(dtype="uint8", divide_by=255)
    elif spec.vocab_size is not None:
        inputs.update(dtype=token_dtype(spec.vocab_size).name, load_dtype="int64")
    targets = {
        "dtype": str(train.targets.dtype).removeprefix("torch."),
        "shape": list(train.targets.shape[1:]),
    }
    return {"inputs": inputs, "targets": targets}


def _storage(inputs: np.ndarray, field: dict) -> np.ndarray:
    if field.get("divide_by"):
        return np.rint(inputs * field["divide_by"]).astype(field["dtype"])  # exact: v/255*255
    return inputs


def _sample_shards(bundle, cfg: DataConfig, staging: Path, seed: int, shard_bytes: int) -> dict:
    fields = _fields(bundle)
    splits = {}
    for name in SPLITS:
        split = getattr(bundle, name)
        if split is None:
            continue
        writer = SampleShardWriter(staging, name, fields=fields, shard_bytes=shard_bytes)
        for start in range(0, len(split), CHUNK_ROWS):
            inputs = split.inputs[start : start + CHUNK_ROWS].numpy()
            targets = split.targets[start : start + CHUNK_ROWS].numpy()
            writer.append(inputs=_storage(inputs, fields["inputs"]), targets=targets)
        splits[name] = writer.close()
    encoder = bundle.preprocessor.encoder
    return {
        "kind": "samples",
        "spec": bundle.spec.to_dict(),
        "fields": fields,
        "splits": splits,
        "statistics": _train_statistics(staging, splits["train"], fields, bundle),
        "encoder": None if encoder is None else encoder.state_dict(),
        "source": cfg.model_dump(mode="json"),
        "seed": seed,
    }


def _train_statistics(staging: Path, train: dict, fields: dict, bundle) -> dict:
    """Scaling statistics in one streaming pass over the train shards just written."""
    spec = bundle.spec
    if spec.vocab_size is not None or spec.input_kind == "text":
        return {"count": 0}  # token ids and text vectors are not scaled
    encoder = bundle.preprocessor.encoder
    num_scaled = encoder.num_numeric() if spec.input_kind == "table" else None
    moments = RunningMoments(is_image=spec.is_image, num_scaled=num_scaled)
    divide_by = fields["inputs"].get("divide_by")
    shards = ShardSamples(staging, train, fields, max_open=2)
    for chunk in shards.field("inputs"):
        values = chunk.astype(np.float32)
        moments.update(values / np.float32(divide_by) if divide_by else values)
    return moments.to_dict()
