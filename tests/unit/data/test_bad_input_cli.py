"""Each bad input through the CLI (`train` and `prepare`): exit 2, one line naming the file
and the row / shard / column, and nothing written. Runs ``cli.main`` in-process."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from scaletrain.cli import main
from scaletrain.config import DataConfig
from scaletrain.data.shards import prepare_shards, read_manifest
from scaletrain.data.transforms.split import split_indices

ROWS = "".join(f"{i},{i * 2},{i % 2}\n" for i in range(20))
# The first test row of 21 (run.seed 0, unstratified): a label only there is never trained on.
HELD_OUT = int(
    split_indices(
        21,
        val_fraction=DataConfig().val_fraction,
        test_fraction=DataConfig().test_fraction,
        seed=0,
    ).test[0]
)


def write_config(tmp_path, data: dict):
    config = {
        "run": {"name": "bad", "out_dir": str(tmp_path / "runs")},
        "data": data,
        "model": {"name": "mlp", "hidden": [8]},
        "train": {"max_epochs": 1, "device": "cpu", "precision": "32"},
        "log": {"progress": False, "tensorboard": False, "report": False},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def image_folder(tmp_path, *, extra):
    for label in ("a", "b"):
        (tmp_path / "img" / label).mkdir(parents=True)
        for index in range(4):
            Image.fromarray(np.full((4, 4, 3), index * 9, np.uint8)).save(
                tmp_path / "img" / label / f"{index}.png"
            )
    extra(tmp_path / "img")
    return {"source": "image_folder", "path": str(tmp_path / "img")}


def csv_data(tmp_path, text, **options):
    (tmp_path / "d.csv").write_text(text)
    return {"source": "csv", "path": str(tmp_path / "d.csv"), **options}


def label_only_outside_train(tmp_path):
    rows = [*ROWS.splitlines(), "20,40,0"]
    rows[HELD_OUT] = f"{HELD_OUT},0,7"
    return csv_data(tmp_path, "a,b,label\n" + "\n".join(rows) + "\n", stratify=False)


def corrupt_shard(tmp_path):
    prepare_shards(DataConfig(name="iris"), tmp_path / "shards", seed=0, shard_bytes=400)
    entry = read_manifest(tmp_path / "shards")["splits"]["train"]["shards"][1]["files"]["targets"]
    path = tmp_path / "shards" / entry["path"]
    path.write_bytes(path.read_bytes()[:-1] + b"\x07")
    return {"source": "shards", "path": str(tmp_path / "shards")}


def newer_manifest(tmp_path):
    prepare_shards(DataConfig(name="iris"), tmp_path / "shards", seed=0, shard_bytes=400)
    manifest_path = tmp_path / "shards" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "format_version": 99}))
    return {"source": "shards", "path": str(tmp_path / "shards")}


CASES = {
    "missing file": (
        lambda t: {"source": "csv", "path": str(t / "nope.csv")},
        "data.path: file not found: {t}/nope.csv",
    ),
    "empty file": (lambda t: csv_data(t, ""), "{t}/d.csv: file is empty"),
    "ragged row": (
        lambda t: csv_data(t, "a,b,label\n" + ROWS + "1,2\n"),
        "{t}/d.csv:22: 2 values, but the header has 3 columns",
    ),
    "non-numeric": (
        lambda t: csv_data(t, "a,b,label\n1,x,0\n" + ROWS),
        "{t}/d.csv:2: column 'b': cannot parse 'x' as a number",
    ),
    "nan": (
        lambda t: csv_data(t, "a,b,label\n" + ROWS + "nan,1,0\n"),
        "{t}/d.csv:22: column 'a': value nan is not finite",
    ),
    "inf": (
        lambda t: csv_data(t, "a,b,label\n" + ROWS + "1,-inf,1\n"),
        "{t}/d.csv:22: column 'b': value -inf is not finite",
    ),
    "undeclared label": (
        lambda t: csv_data(t, "a,b,label\n" + ROWS + "1,2,7\n", classes=["0", "1"]),
        "{t}/d.csv:22: label '7' is not among data.classes (0, 1)",
    ),
    "label not in train": (
        label_only_outside_train,
        f"{{t}}/d.csv:{HELD_OUT + 2}: label '7' is in the test split but not among the train "
        "split's classes",
    ),
    "unreadable image": (
        lambda t: image_folder(t, extra=lambda root: (root / "a" / "x.png").write_bytes(b"no")),
        "{t}/img/a/x.png: cannot read as an image",
    ),
    "inconsistent mode": (
        lambda t: {
            **image_folder(
                t,
                extra=lambda root: Image.fromarray(np.zeros((4, 4), np.uint8)).save(
                    root / "b" / "grey.png"
                ),
            ),
            "image": {"mode": "keep"},
        },
        "{t}/img/b/grey.png: image mode 'L' differs from 'RGB'",
    ),
    "shard checksum": (corrupt_shard, "{t}/shards/train/00001.targets.npy: SHA-256 does not match"),
    "newer manifest": (newer_manifest, "{t}/shards/manifest.json: format version 99 is newer"),
}


@pytest.mark.parametrize("command", ["train", "prepare"])
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, case, command):
    make_data, expected = CASES[case]
    if command == "prepare" and case in ("shard checksum", "newer manifest"):
        pytest.skip("shards are an input of train, not of prepare")
    config = write_config(tmp_path, make_data(tmp_path))
    before = sorted(path for path in tmp_path.rglob("*"))
    capsys.readouterr()
    argv = (
        ["train", str(config)]
        if command == "train"
        else ["prepare", str(config), "--out", str(tmp_path / "out" / "shards")]
    )
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: " + expected.format(t=tmp_path)), lines[0]
    assert sorted(path for path in tmp_path.rglob("*")) == before  # nothing written
