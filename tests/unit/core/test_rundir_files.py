"""Run-directory files are written whole, leave no temporaries, and are readable by others."""

from __future__ import annotations

import stat

from scaletrain.data.shards.format import atomic_write_json as write_manifest_json
from scaletrain.rundir import atomic_write_json


def test_atomic_writes_leave_one_shareable_file(tmp_path):
    atomic_write_json(tmp_path / "summary.json", {"status": "finished"})
    write_manifest_json(tmp_path / "manifest.json", {"version": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "summary.json"]
    for name in ("summary.json", "manifest.json"):
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert mode == 0o644, f"{name}: {oct(mode)}"  # mkstemp's 0600 would hide reports
