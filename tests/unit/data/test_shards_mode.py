"""A prepared shard folder takes the modes mkdir and open() would give under the user's
umask (mkdtemp alone makes it 0700), like every other file scaletrain writes."""

from __future__ import annotations

import os

from scaletrain.config import DataConfig
from scaletrain.data.shards import prepare_shards


def test_prepared_folder_and_files_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        prepare_shards(DataConfig(name="wine"), tmp_path / "wine", seed=0, shard_bytes=4000)
    finally:
        os.umask(previous)
    paths = [tmp_path / "wine", *(tmp_path / "wine").rglob("*")]
    assert len(paths) > 3
    for path in paths:
        assert path.stat().st_mode & 0o777 == (0o750 if path.is_dir() else 0o640), path
