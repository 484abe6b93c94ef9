"""scaletrain's sharded on-disk format: memory-mapped .npy shards plus a checksummed manifest."""

from scaletrain.data.shards.format import FORMAT_VERSION, parse_size, read_manifest
from scaletrain.data.shards.prepare import prepare_shards
from scaletrain.data.shards.reader import MappedShards, ShardSamples, TokenWindows
from scaletrain.data.shards.writer import SampleShardWriter, TokenShardWriter, write_manifest

__all__ = [
    "FORMAT_VERSION",
    "MappedShards",
    "SampleShardWriter",
    "ShardSamples",
    "TokenShardWriter",
    "TokenWindows",
    "parse_size",
    "prepare_shards",
    "read_manifest",
    "write_manifest",
]
