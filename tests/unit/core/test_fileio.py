"""The one atomic writer and the one JSONL reader: whole files, shareable, no temporaries."""

from __future__ import annotations

import json
import os
import stat

import pytest

from scaletrain.errors import UserError
from scaletrain.fileio import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
)

RECORDS = [{"step": 1, "loss": 2.5}, {"event": "checkpoint", "step": 2}]


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_each_variant_writes_one_shareable_file(tmp_path):
    atomic_write_json(tmp_path / "summary.json", {"status": "finished"})
    atomic_write_json(tmp_path / "rank.json", [1, 2], indent=None)
    atomic_write_text(tmp_path / "report.html", "<p>é</p>")
    atomic_write_bytes(tmp_path / "deep" / "blob.bin", b"\x00\xff")  # makes the folder
    assert json.loads((tmp_path / "summary.json").read_text()) == {"status": "finished"}
    assert (tmp_path / "rank.json").read_text() == "[1, 2]\n"
    assert (tmp_path / "report.html").read_text(encoding="utf-8") == "<p>é</p>"
    assert (tmp_path / "deep" / "blob.bin").read_bytes() == b"\x00\xff"
    names = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert names == ["deep", "deep/blob.bin", "rank.json", "report.html", "summary.json"]
    for name in ("summary.json", "rank.json", "report.html", "deep/blob.bin"):
        assert _mode(tmp_path / name) == 0o644, name  # mkstemp's 0600 would hide reports


def test_a_file_written_by_path_replaces_the_old_one_whole(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")
    with atomic_path(target) as temporary:
        assert temporary.parent == tmp_path and temporary != target
        temporary.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # readers see the old file until the rename
    assert target.read_bytes() == b"new" and _mode(target) == 0o644
    with atomic_path(target) as temporary:  # a writer that makes its own file (safetensors)
        temporary.unlink()
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT, 0o600))
    assert target.read_bytes() == b"" and _mode(target) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_a_failure_mid_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "best.json"
    atomic_write_json(target, {"step": 1})
    with pytest.raises(RuntimeError, match="disk"), atomic_path(target) as temporary:
        temporary.write_text('{"step": ')
        raise RuntimeError("disk went away")
    with pytest.raises(TypeError, match="not JSON serializable"):
        atomic_write_json(target, {"step": object()})
    assert json.loads(target.read_text()) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["best.json"]


def test_jsonl_skips_blank_lines_and_drops_a_last_line_cut_short(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert read_jsonl(path) == []  # a run that died before its first line
    lines = [json.dumps(RECORDS[0]), "", "   ", json.dumps(RECORDS[1]), '{"step": 3, "lo']
    path.write_text("\n".join(lines))
    assert read_jsonl(path) == RECORDS
    path.write_text("\n".join(lines) + "\n\n")  # blank lines after the cut one
    assert read_jsonl(path) == RECORDS
    path.write_bytes(json.dumps(RECORDS[0]).encode() + b"\n\x00\x00\x00")  # a power cut's zeros
    assert read_jsonl(path) == RECORDS[:1]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("{oops", "Expecting property name"),
        ("[1, 2]", "a JSON list, expected an object"),
        ("\udcff", "codec can't decode"),  # written as the raw byte 0xff: not UTF-8
    ],
)
def test_jsonl_refuses_a_bad_line_before_the_last_naming_file_and_line(tmp_path, bad, reason):
    path = tmp_path / "ledger.jsonl"
    text = "\n".join([json.dumps(RECORDS[0]), bad, json.dumps(RECORDS[1])])
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(UserError, match=rf"ledger.jsonl:2: not a JSON record \(.*{reason}"):
        read_jsonl(path)
