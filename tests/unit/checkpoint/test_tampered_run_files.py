"""Every tampered or malformed file of a run directory: `scaletrain eval|resume|predict|export`
prints one line naming the file and exits 2, never a traceback. A real tiny run is trained
once; each case damages a copy of it, and resealing the checkpoint's manifest (what an
attacker who can write the folder can do) makes sure it is the file's content that is
refused, not its checksum."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from scaletrain import api
from scaletrain.checkpoint import write_manifest
from scaletrain.cli import main

pytestmark = pytest.mark.slow  # one tiny training run, then a command per case
LAST = "checkpoints/step_00000040"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    config = {
        "run": {"name": "tiny", "seed": 0, "out_dir": str(root)},
        "data": {"source": "builtin", "name": "digits"},
        "model": {"name": "mlp", "hidden": [32]},
        "optim": {"name": "adamw", "lr": 0.01},
        "train": {"max_epochs": 2, "batch_size": 64, "precision": "32"},
        "log": {"progress": False, "tensorboard": False, "report": False},
        "checkpoint": {"every_epochs": 1},  # step 20 too: a corrupt newest one falls back to it
    }
    run = api.train(config).run_dir
    from sklearn.datasets import load_digits

    np.save(root / "inputs.npy", load_digits().data[:5].reshape(5, 1, 8, 8).astype("float32"))
    assert json.loads((run / "checkpoints/best.json").read_text())["step"] == 40
    return run


def _write(run: Path, name: str, content) -> None:
    text = content if isinstance(content, str) else json.dumps(content)
    (run / name).write_text(text)


def _reseal(folder: Path) -> None:
    (folder / "manifest.json").unlink()
    write_manifest(folder, step=40)


def _edit_json(run: Path, name: str, change) -> None:
    data = json.loads((run / name).read_text())
    change(data)
    _write(run, name, data)


def _manifest(change):
    return lambda run: _edit_json(run, f"{LAST}/manifest.json", change)


def _side_state(content):
    def corrupt(run: Path) -> None:
        _write(run, f"{LAST}/rank_00000.json", content)
        _reseal(run / LAST)

    return corrupt


def _garbage_rng(run: Path) -> None:
    side = json.loads((run / LAST / "rank_00000.json").read_text())
    side["rng"]["python"]["keys"] = [1, 2, 3]
    _side_state(side)(run)


def _metadata_reads_outside(run: Path) -> None:
    outside = run.parent / "outside.safetensors"
    shutil.copy(run / LAST / "__0_0.safetensors", outside)

    def point(metadata: dict) -> None:
        for entry in metadata["tensors"].values():
            for chunk in entry["chunks"]:
                chunk["file"] = "../../../outside.safetensors"

    _edit_json(run, f"{LAST}/metadata.json", point)
    _reseal(run / LAST)


def _first_record_step(step):
    def corrupt(run: Path) -> None:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        lines[0] = json.dumps({**json.loads(lines[0]), "step": step})
        _write(run, "metrics.jsonl", "\n".join(lines) + "\n")

    return corrupt


def _first_entry(manifest: dict) -> dict:
    return next(iter(manifest["files"].values()))


# (command, file, corruption, expected text of the one error line)
CASES = {
    "manifest without files": (
        "eval",
        f"{LAST}/manifest.json",
        _manifest(lambda m: m.pop("files")),
        "lacks `files`",
    ),
    "manifest version '1'": (
        "eval",
        f"{LAST}/manifest.json",
        _manifest(lambda m: m.update(version="1")),
        "`version` must be a positive integer, got '1'",
    ),
    "manifest as []": (
        "eval",
        f"{LAST}/manifest.json",
        lambda run: _write(run, f"{LAST}/manifest.json", []),
        "expected a JSON object, got list",
    ),
    "manifest entry without bytes": (
        "eval",
        f"{LAST}/manifest.json",
        _manifest(lambda m: _first_entry(m).pop("bytes")),
        "lacks `bytes`",
    ),
    "export: manifest as []": (
        "export",
        f"{LAST}/manifest.json",
        lambda run: _write(run, f"{LAST}/manifest.json", []),
        "expected a JSON object, got list",
    ),
    "side state [1,2,3]": (
        "resume",
        f"{LAST}/rank_00000.json",
        _side_state([1, 2, 3]),
        "side state must be a JSON object, got list",
    ),
    "eval: side state [1,2,3]": (
        "eval",
        f"{LAST}/rank_00000.json",
        _side_state([1, 2, 3]),
        "side state must be a JSON object, got list",
    ),
    "side state {}": (
        "resume",
        f"{LAST}/rank_00000.json",
        _side_state({}),
        "side state is malformed (lacks 'step')",
    ),
    "side state with garbage RNG": (
        "resume",
        f"{LAST}/rank_00000.json",
        _garbage_rng,
        "side state is malformed (ValueError",
    ),
    "eval: best.json not JSON": (
        "eval",
        "checkpoints/best.json",
        lambda run: _write(run, "checkpoints/best.json", "{not json"),
        'expected {"step": N, ...} naming a checkpoint',
    ),
    "resume: best.json not JSON": (
        "resume",
        "checkpoints/best.json",
        lambda run: _write(run, "checkpoints/best.json", "{not json"),
        'expected {"step": N, ...} naming a checkpoint',
    ),
    "eval: best.json step ../../x": (
        "eval",
        "checkpoints/best.json",
        lambda run: _write(run, "checkpoints/best.json", {"step": "../../x"}),
        '\'{"step": "../../x"}\'',
    ),
    "resume: best.json step ../../x": (
        "resume",
        "checkpoints/best.json",
        lambda run: _write(run, "checkpoints/best.json", {"step": "../../x"}),
        '\'{"step": "../../x"}\'',
    ),
    "preprocess.json as []": (
        "predict",
        "preprocess.json",
        lambda run: _write(run, "preprocess.json", []),
        "not a file this scaletrain wrote (AttributeError",
    ),
    "data_spec.json naming torch.load as a dtype": (
        "predict",
        "data_spec.json",
        lambda run: _edit_json(run, "data_spec.json", lambda s: s.update(input_dtype="load")),
        "input_dtype 'load' is not a torch dtype",
    ),
    "eval: metadata.json reads outside": (
        "eval",
        f"{LAST}/metadata.json",
        _metadata_reads_outside,
        "reads '../../../outside.safetensors', which is not a data file the manifest lists",
    ),
    "resume: metadata.json reads outside": (
        "resume",
        f"{LAST}/metadata.json",
        _metadata_reads_outside,
        "reads '../../../outside.safetensors', which is not a data file the manifest lists",
    ),
    # found by the hostile-file sweep (session 29): each a traceback before
    "predict: a folder in place of data_spec.json": (
        "predict",
        "data_spec.json",
        lambda run: ((run / "data_spec.json").unlink(), (run / "data_spec.json").mkdir()),
        "cannot read it (Is a directory)",
    ),
    "eval: data_spec.json input_shape ['12']": (
        "eval",
        "data_spec.json",
        lambda run: _edit_json(run, "data_spec.json", lambda s: s.update(input_shape=["12"])),
        "input_shape.0: input should be a valid integer, got '12'",
    ),
    "predict: preprocess.json shift 10**400": (  # valid JSON that no float holds
        "predict",
        "preprocess.json",
        lambda run: _edit_json(run, "preprocess.json", lambda s: s.update(shift=[10**400])),
        "not a file this scaletrain wrote (OverflowError",
    ),
    "export: config.yaml not UTF-8": (
        "export",
        "config.yaml",
        lambda run: (run / "config.yaml").write_bytes(b"\xcd\xff" * 50),
        "not UTF-8 text",
    ),
    "export: data_spec.json as []": (  # was carried into the export, refused at its load
        "export",
        "data_spec.json",
        lambda run: _write(run, "data_spec.json", []),
        "expected a JSON object, got list",
    ),
    "eval: config.yaml seed NaN": (
        "eval",
        "config.yaml",
        lambda run: _write(
            run, "config.yaml", (run / "config.yaml").read_text().replace("seed: 0", "seed: .nan")
        ),
        "run.seed: input should be a finite number, got nan",
    ),
    "eval: summary.json weights 'last'": (
        "eval",
        "summary.json",
        lambda run: _edit_json(run, "summary.json", lambda s: s.update(weights="last")),
        "`weights`: input should be a valid dictionary",
    ),
    "report: summary.json steps '12'": (
        "report",
        "summary.json",
        lambda run: _edit_json(run, "summary.json", lambda s: s.update(steps="12")),
        "`steps`: input should be a valid integer, got '12'",
    ),
    "resume: metrics.jsonl step '12'": (
        "extend",
        "metrics.jsonl",
        _first_record_step("12"),
        "record 1: `step` must be an integer, got '12'",
    ),
}


def _argv(command: str, run: Path) -> list[str]:
    if command == "extend":  # resume a finished run past its end: it reads metrics.jsonl
        return ["resume", str(run), "train.max_epochs=3"]
    if command == "predict":
        return ["predict", str(run), str(run.parent.parent / "inputs.npy")]
    if command == "export":
        return ["export", str(run), "--out", str(run.parent / "model.safetensors")]
    return [command, str(run)]


def _damaged_copy(trained: Path, tmp_path: Path, corrupt) -> Path:
    run = tmp_path / "runs" / "tiny"
    shutil.copytree(trained, run)
    shutil.copy(trained.parent / "inputs.npy", tmp_path / "inputs.npy")
    corrupt(run)
    return run


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_run_file_is_one_line_and_exit_2(trained, tmp_path, capfd, case):
    command, name, corrupt, expected = CASES[case]
    run = _damaged_copy(trained, tmp_path, corrupt)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")  # as api.py
        code = main(_argv(command, run))
    _, err = capfd.readouterr()
    lines = err.strip().splitlines() + [str(w.message) for w in caught]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"error: {run / name}: "), lines
    assert expected in lines[0], lines[0]


def test_a_corrupt_newest_checkpoint_falls_back_with_one_warning_naming_the_file(
    trained, tmp_path, capfd
):
    run = _damaged_copy(trained, tmp_path, _manifest(lambda m: m.pop("files")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")  # as api.py
        code = main(["resume", str(run)])
    assert code == 0
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert f"{run / LAST / 'manifest.json'}: lacks `files`" in messages[0]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(m.get("event") == "resume" and m.get("step") == 20 for m in metrics)


@pytest.mark.parametrize(
    "case", ["manifest entry without bytes", "side state {}", "resume: metadata.json reads outside"]
)
def test_the_real_command_line_says_the_same(trained, tmp_path, case):
    command, name, corrupt, expected = CASES[case]
    run = _damaged_copy(trained, tmp_path, corrupt)
    result = subprocess.run(
        [sys.executable, "-m", "scaletrain", *_argv(command, run)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: {run / name}: "), lines
    assert expected in lines[0] and "Traceback" not in result.stderr
