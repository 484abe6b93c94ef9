"""``data.source: shards``: a prepared folder read through memory maps, with bounded memory.

The manifest fixes the splits, the spec and the encoder (tokenizer, categories …); scaling
comes from the streamed train statistics and ``data.normalize``, and runs per batch on the
device (``Split.transform``), so no split is ever held in memory.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from scaletrain.config import DataConfig
from scaletrain.data.bundle import DataBundle, DataSpec, Split
from scaletrain.data.shards.format import SPLITS, read_manifest, verify_shards
from scaletrain.data.shards.reader import ShardSamples, TokenWindows
from scaletrain.data.sources.registry import register_source
from scaletrain.data.transforms.labels import balanced_weights
from scaletrain.data.transforms.preprocess import Preprocessor, encoder_from_state
from scaletrain.data.transforms.stats import RunningMoments
from scaletrain.errors import ConfigError, DataError


class ShardTransform:
    """Stored inputs -> model inputs on the device: uint8 images / 255, then scaling."""

    def __init__(self, preprocessor: Preprocessor, *, divide_by: float | None):
        self.preprocessor = preprocessor
        self.divide_by = divide_by

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.divide_by:
            inputs = inputs.to(torch.float32) / self.divide_by
        return self.preprocessor.transform(inputs)


@register_source("shards")
def read_shards(cfg: DataConfig) -> DataBundle:
    """The prepared folder at ``data.path``, checked against its manifest."""
    if cfg.path is None:
        raise ConfigError("data.path: not set; give the folder written by `scaletrain prepare`")
    root = Path(cfg.path).expanduser()
    manifest = read_manifest(root)
    verify_shards(root, manifest, mode=cfg.shards.verify)
    spec = DataSpec.from_dict(manifest["spec"])
    if cfg.task not in ("auto", spec.task):
        raise ConfigError(
            f"data.task: {cfg.task!r}, but the shards at {root} were prepared for {spec.task!r}"
        )
    encoder = encoder_from_state(manifest.get("encoder"))
    if manifest["kind"] == "tokens":
        return _token_bundle(cfg, root, manifest, spec, encoder)
    return _sample_bundle(cfg, root, manifest, spec, encoder)


def _token_bundle(cfg: DataConfig, root: Path, manifest: dict, spec: DataSpec, encoder):
    length = cfg.context_length  # windows are cut when read: any context length works
    splits = {}
    for name, entry in manifest["splits"].items():
        windows = TokenWindows(
            root,
            entry,
            context_length=length,
            max_open=cfg.shards.max_open,
            read_bytes=cfg.shards.read_mib << 20,
        )
        if len(windows) == 0:
            raise DataError(
                f"{root}: the {name} split has {entry['num_tokens']} tokens, fewer than "
                f"data.context_length + 1 = {length + 1}"
            )
        num_text_bytes = entry.get("num_text_bytes")  # absent in shards from before it
        per_token = num_text_bytes / entry["num_tokens"] if num_text_bytes else None
        splits[name] = Split(None, None, dataset=windows, bytes_per_token=per_token)
    spec = dataclasses.replace(spec, input_shape=(length,))
    preprocessor = Preprocessor("none", encoder=encoder)
    return DataBundle(spec, *(splits.get(name) for name in SPLITS), preprocessor)


def _sample_bundle(cfg: DataConfig, root: Path, manifest: dict, spec: DataSpec, encoder):
    fields = manifest["fields"]
    moments = RunningMoments.from_dict(manifest["statistics"])
    method = cfg.normalize if moments.count else "none"
    preprocessor = Preprocessor.from_moments(
        method, moments, num_features=spec.input_shape[0], encoder=encoder
    )
    preprocessor.is_image = spec.is_image
    transform = ShardTransform(preprocessor, divide_by=fields["inputs"].get("divide_by"))
    splits = {}
    for name, entry in manifest["splits"].items():
        samples = ShardSamples(
            root, entry, fields, max_open=cfg.shards.max_open, read_bytes=cfg.shards.read_mib << 20
        )
        splits[name] = Split(None, None, dataset=samples, transform=transform)
    if cfg.sampler == "balanced":
        targets = np.concatenate(list(splits["train"].dataset.field("targets")))
        splits["train"].sample_weights = balanced_weights(torch.from_numpy(targets), spec.task)
    return DataBundle(spec, *(splits.get(name) for name in SPLITS), preprocessor)
