"""An exported model.safetensors as a predicting `Run`, without its run directory.

`scaletrain export --format safetensors` stores, beside the weights, the resolved config, the
data spec and the preprocessing (scaling statistics, table/text/image encoder with its
vocabulary or tokenizer) as JSON metadata, and a SHA-256 over all of it: one file is enough
to rebuild the network and its preprocessing, and nothing in it is pickle.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from torch import nn

from scaletrain.checkpoint.export import DIGEST_KEY, FORMAT, export_digest
from scaletrain.checkpoint.state_dict import load_model_state, model_state
from scaletrain.config import Config, UserModelConfig, load_config
from scaletrain.data import Preprocessor
from scaletrain.errors import CheckpointError, UserError
from scaletrain.fileio import read_text_file
from scaletrain.rundir import RunDir, open_run_dir
from scaletrain.trained.files import read_preprocessor, read_spec, run_config_text, spec_from_dict
from scaletrain.trained.handle import Run
from scaletrain.trained.quantized import float32_config, quantization_of
from scaletrain.trained.quantized_export import (
    QUANTIZE_KEY,
    export_quantized,
    load_quantized_export,
)
from scaletrain.trained.weights import build_run_model

SPEC_KEY = "data_spec"
PREPROCESS_KEY = "preprocess"


def preprocessing_metadata(run: RunDir) -> dict[str, str]:
    """The run's data spec and preprocessing as they are in its directory (JSON text),
    each read as `load_exported` will read it: an edited file is refused now, naming it,
    not carried into an export that then fails to load."""
    for path in (run.root / "data_spec.json", run.preprocess):
        if not (path.exists() or path.is_symlink()):
            raise CheckpointError(f"{path}: missing; the export needs the run's preprocessing")
    read_spec(run)
    read_preprocessor(run)
    return {
        SPEC_KEY: read_text_file(run.root / "data_spec.json"),
        PREPROCESS_KEY: read_text_file(run.preprocess),
    }


def export_run_safetensors(
    run_dir: str | Path, *, out: str | Path | None, checkpoint: str | None
) -> Path:
    """`scaletrain export --format safetensors`: weights + config + spec + preprocessing (a
    quantized run without `checkpoint`: its integer weights and scales, as compressed)."""
    from scaletrain.checkpoint.export import export_safetensors

    run = open_run_dir(run_dir)
    target = Path(out) if out else run.root / "model.safetensors"
    if checkpoint is None and quantization_of(run.root):
        return export_quantized(run, target, extra=preprocessing_metadata(run))
    return export_safetensors(
        run.checkpoints,
        target,
        which=checkpoint or "best",
        config_text=run_config_text(run),
        extra=preprocessing_metadata(run),
    )


def load_exported(path: str | Path, *, model: nn.Module | None = None) -> Run:
    """A `Run` (predict, evaluate, preprocess) from an exported safetensors file alone."""
    path = Path(path)
    tensors, metadata = read_exported(path)
    try:
        cfg = load_config(yaml.safe_load(metadata["config"]))
        spec = spec_from_dict(json.loads(metadata[SPEC_KEY]))
        preprocessor = Preprocessor.from_state_dict(json.loads(metadata[PREPROCESS_KEY]))
    except UserError as exc:
        raise CheckpointError(f"{path}: its config is not valid here: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{path}: unreadable metadata ({type(exc).__name__})") from None
    network = _network(path, cfg, spec, model)
    if QUANTIZE_KEY in metadata:  # a quantized run's export: integer weights and scales
        network, cfg = load_quantized_export(path, network, tensors, metadata), float32_config(cfg)
    else:
        _load_float(path, network, tensors)
    return Run(
        path,
        {},
        network.eval(),
        cfg,
        status="exported",
        weights={"name": metadata.get("checkpoint", ""), "step": int(metadata.get("step", 0))},
        spec=spec,
        preprocessor=preprocessor,
    )


def _load_float(path: Path, network: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    expected = set(model_state(network))
    if expected != set(tensors):
        missing = sorted(expected - set(tensors))[:3]
        raise UserError(
            f"{path}: its tensors do not fit a {type(network).__name__} (e.g. missing "
            f"{missing}); pass the module the run was trained with as model="
        )
    load_model_state(network, tensors)


def read_exported(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of an export, checked against its digest; a truncated, edited or
    foreign file is one CheckpointError line naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    if not path.is_file():
        raise CheckpointError(f"{path}: no such exported file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable safetensors file ({reason})") from None
    if metadata.get("format") != FORMAT or DIGEST_KEY not in metadata:
        raise CheckpointError(
            f"{path}: not a scaletrain export with its preprocessing; re-export the run "
            "with `scaletrain export RUN_DIR`"
        )
    if export_digest(tensors, metadata) != metadata[DIGEST_KEY]:
        raise CheckpointError(f"{path}: its contents do not match its checksum; was it edited?")
    return tensors, metadata


def _network(path: Path, cfg: Config, spec, model: nn.Module | None) -> nn.Module:
    if model is not None:
        if not isinstance(model, nn.Module):
            raise UserError(f"model: expected a torch nn.Module, got {type(model).__name__}")
        return model.cpu()
    if isinstance(cfg.model, UserModelConfig):
        raise UserError(
            f"{path} holds a user module's weights ({cfg.model.class_name}); pass a fresh "
            f"instance: scaletrain.load_exported({str(path)!r}, model={cfg.model.class_name}())"
        )
    return build_run_model(cfg, spec).cpu()
