"""Each class of hostile run file found by the sweep (docs/fault-tolerance.md): a folder in
place of a file, values of the wrong type, huge or non-finite numbers. Every one is a
UserError whose one line names the file (and the record and key), never a traceback."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from scaletrain.checkpoint.manifest import verify_manifest
from scaletrain.config import load_config, load_run_config
from scaletrain.data import DataSpec, Preprocessor
from scaletrain.errors import CheckpointError, ConfigError, UserError
from scaletrain.fileio import atomic_write_json, read_jsonl, read_text_file
from scaletrain.rundir import RunDir, read_json
from scaletrain.runfiles import checked_file, checked_records
from scaletrain.trained.files import read_preprocessor, read_spec

HUGE = 10**400  # valid JSON; float() overflows


def _folder(path: Path) -> None:
    path.mkdir()


def _link_to_folder(path: Path) -> None:
    path.symlink_to(path.parent)


@pytest.mark.parametrize("put", [_folder, _link_to_folder], ids=["folder", "link to a folder"])
@pytest.mark.parametrize(
    ("name", "read"),
    [
        ("summary.json", read_json),
        ("metrics.jsonl", read_jsonl),
        ("config.yaml", read_text_file),
        ("manifest.json", lambda path: verify_manifest(path.parent)),
    ],
)
def test_a_folder_in_place_of_a_run_file_is_one_line(tmp_path, put, name, read):
    path = tmp_path / name
    put(path)
    with pytest.raises(UserError) as refused:
        read(path)
    assert str(refused.value) == f"{path}: cannot read it (Is a directory); expected a file"
    if name == "manifest.json":
        assert isinstance(refused.value, CheckpointError)


def test_a_folder_where_a_run_file_is_written_is_one_line(tmp_path):
    """resume rewrites plan.json, report writes report.html: over a folder, os.replace fails."""
    path = tmp_path / "plan.json"
    path.mkdir()
    with pytest.raises(UserError, match=f"^{path}: a folder is where this file goes"):
        atomic_write_json(path, {"world_size": 1})
    assert list(tmp_path.iterdir()) == [path] and path.is_dir()  # no temporary left behind


def test_bytes_that_are_not_utf8_name_the_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"run: \xcd\xff")
    with pytest.raises(UserError, match=f"^{path}: not UTF-8 text"):
        read_text_file(path)


SPEC = DataSpec("classification", (1, 8, 8), torch.float32, 10, list("ab"), [3, 4]).to_dict()


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("input_shape", ["12"], "input_shape.0: input should be a valid integer, got '12'"),
        ("input_shape", [math.nan], "input_shape.0: input should be a valid integer, got nan"),
        ("num_outputs", HUGE, "num_outputs: input should be less than or equal to 2147483647"),
        ("num_outputs", True, "num_outputs: input should be a valid integer, got True"),
        ("class_counts", [-1], "class_counts.0: input should be greater than or equal to 0"),
        ("task", "x", "task: input should be 'classification', 'regression'"),
        ("input_kind", 1, "input_kind: input should be 'array', 'table', 'text' or 'image'"),
    ],
)
def test_a_data_spec_value_of_the_wrong_type_names_file_and_key(tmp_path, key, value, expected):
    _assert_edit_refused(tmp_path / "data_spec.json", {**SPEC, key: value}, read_spec, expected)


def _assert_edit_refused(path, document, read, expected):
    """`document` written at `path`; `read` of the run folder refuses it naming the file."""
    path.write_text(json.dumps(document))
    with pytest.raises(UserError) as refused:
        read(RunDir(path.parent))
    message = str(refused.value)
    assert message.startswith(f"{path}: not a file this scaletrain wrote"), message
    assert expected in message, message


def test_a_data_spec_that_is_not_an_object(tmp_path):
    (tmp_path / "data_spec.json").write_text("[1, 2, 3]")
    with pytest.raises(UserError, match=r"\(ValueError: expected a JSON object, got list\)"):
        read_spec(RunDir(tmp_path))


STATE = Preprocessor(
    "standardize", shift=torch.zeros(1, 2), scale=torch.ones(1, 2), is_image=False
).state_dict()


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("method", "12", "method '12'"),
        ("is_image", 1, "is_image 1"),
        ("shape", [-1, 2], "shape must be a list of positive sizes"),
        ("shift", [0.0, math.nan], "shift holds a number that is not finite"),
        ("scale", [1.0], "scale holds 1 numbers; shape [1, 2]"),  # would broadcast
        ("shift", [0.0, HUGE], "OverflowError"),
    ],
)
def test_an_edited_preprocess_json_names_the_file(tmp_path, key, value, expected):
    path = tmp_path / "preprocess.json"
    _assert_edit_refused(path, {**STATE, key: value}, read_preprocessor, expected)


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("summary.json", [], "expected a JSON object, got list"),
        ("summary.json", {"steps": "12"}, "`steps`: input should be a valid integer, got '12'"),
        ("summary.json", {"weights": "last"}, "`weights`: input should be a valid dictionary"),
        ("summary.json", {"wall_s": math.nan}, "`wall_s`: input should be a finite number"),
        ("summary.json", {"mfu": HUGE}, "`mfu`: value error, a number too large for a float"),
        ("summary.json", {"metrics": {"val": {"accuracy": "1"}}}, "`metrics.val.accuracy`"),
        ("plan.json", {"steps_per_epoch": HUGE}, "`steps_per_epoch`: input should be less"),
        ("model_summary.json", {"layers": [{"depth": HUGE}]}, "`layers.0.depth`"),
        ("data_spec.json", {"class_counts": [math.nan]}, "`class_counts.0`"),
    ],
)
def test_a_json_file_a_reader_shows_is_typed(tmp_path, name, data, expected):
    with pytest.raises(UserError) as refused:
        checked_file(tmp_path / name, data)
    assert str(refused.value).startswith(f"{tmp_path / name}: {expected}"), refused.value


@pytest.mark.parametrize(
    ("name", "record", "expected"),
    [
        ("metrics.jsonl", {"step": math.nan}, "`step`: input should be a valid integer"),
        ("metrics.jsonl", {"time_s": -1}, "`time_s`: input should be greater than or equal"),
        ("metrics.jsonl", {"metrics": []}, "`metrics`: input should be a valid dictionary"),
        ("ledger.jsonl", {"steps": ["a", 2]}, "`steps.0`: input should be a valid integer"),
    ],
)
def test_a_record_of_the_wrong_type_is_named_by_its_number(tmp_path, name, record, expected):
    records = [{"step": 1, "loss": math.nan}, record]  # a NaN loss is a diverged run's
    with pytest.raises(UserError) as refused:
        checked_records(tmp_path / name, records)
    assert str(refused.value).startswith(f"{tmp_path / name}: record 2: {expected}")


def test_a_run_config_names_its_file_and_a_typed_config_does_not(tmp_path):
    """A user's own config says the key only (as before): they typed the file's name."""
    path = tmp_path / "config.yaml"
    path.write_text("run: {seed: .nan}\n")
    with pytest.raises(ConfigError) as refused:
        load_run_config(path)
    assert str(refused.value) == f"{path}: run.seed: input should be a finite number, got nan"
    assert refused.value.problems == [str(refused.value)]
    with pytest.raises(ConfigError, match="^run.seed: input should be a finite number"):
        load_config(path)


def test_a_config_nested_too_deeply_for_the_report_names_the_file(tmp_path):
    from scaletrain.report.rundata import read_run

    (tmp_path / "config.yaml").write_text("[" * 3_000 + "]" * 3_000)
    with pytest.raises(UserError, match=f"^{tmp_path / 'config.yaml'}: not valid YAML"):
        read_run(tmp_path)
