"""Pruning and quantization of a trained run into a new run directory (`scaletrain compress`)."""

from scaletrain.compress.load import load_compressed
from scaletrain.compress.options import CompressOptions
from scaletrain.compress.runner import CompressResult, compress

__all__ = ["CompressOptions", "CompressResult", "compress", "load_compressed"]
