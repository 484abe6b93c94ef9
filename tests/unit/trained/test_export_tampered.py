"""A truncated or byte-flipped exported file (ONNX or safetensors) is refused with one line
naming it (exit 2 from the CLI), never a traceback, never loaded."""

from __future__ import annotations

import pytest

import scaletrain
from scaletrain.errors import CheckpointError
from scaletrain.trained.onnx_export import load_onnx


@pytest.fixture(scope="module")
def exports(family_run, tmp_path_factory):
    run = family_run("mlp")
    root = tmp_path_factory.mktemp("exports")
    onnx_path = scaletrain.export(run.run_dir, format="onnx", out=root / "model.onnx")
    safetensors_path = scaletrain.export(run.run_dir, out=root / "model.safetensors")
    return {"onnx": onnx_path.read_bytes(), "safetensors": safetensors_path.read_bytes()}


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def flipped(at: float):
    def flip(data: bytes) -> bytes:
        index = int(len(data) * at)
        return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]

    return flip


TAMPERINGS = {
    "truncated": truncated,
    "flipped early": flipped(0.05),  # header / graph structure
    "flipped middle": flipped(0.5),  # weights
    "flipped late": flipped(0.97),
    "empty": lambda data: b"",
}
LOADERS = {"onnx": load_onnx, "safetensors": scaletrain.load_exported}


@pytest.mark.parametrize("kind", ["onnx", "safetensors"])
@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_a_tampered_export_is_one_line_naming_the_file(exports, kind, tampering, tmp_path):
    path = tmp_path / f"model.{kind}"
    path.write_bytes(TAMPERINGS[tampering](exports[kind]))
    with pytest.raises(CheckpointError) as caught:
        LOADERS[kind](path)
    message = str(caught.value)
    assert message.startswith(str(path)) and "\n" not in message


@pytest.mark.parametrize("kind", ["onnx", "safetensors"])
def test_the_untouched_exports_load(exports, kind, tmp_path):
    path = tmp_path / f"model.{kind}"
    path.write_bytes(exports[kind])
    assert LOADERS[kind](path) is not None


def test_an_older_export_without_preprocessing_is_refused(exports, tmp_path):
    """A weights-only file (as `scaletrain export` wrote before) cannot rebuild predictions."""
    from safetensors.torch import load_file, save_file

    path = tmp_path / "model.safetensors"
    path.write_bytes(exports["safetensors"])
    save_file(load_file(path), str(tmp_path / "old.safetensors"), metadata={"format": "x"})
    with pytest.raises(CheckpointError, match="not a scaletrain export with its preprocessing"):
        scaletrain.load_exported(tmp_path / "old.safetensors")
