"""``ImageDecoder``: the size and mode of the training images, so predict decodes files alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scaletrain.config import ImageConfig
from scaletrain.data.raw import RawImages
from scaletrain.data.sources.image_folder import EXTENSIONS, decode_all, image_files
from scaletrain.errors import DataError


class ImageDecoder:
    """The size and mode the training images had: predict decodes new files the same way."""

    kind = "image"

    def __init__(self, *, height: int, width: int, channels: int):
        self.height, self.width, self.channels = height, width, channels

    @classmethod
    def for_arrays(cls, images: np.ndarray) -> ImageDecoder:
        """From decoded training images (N, C, H, W)."""
        return cls(height=images.shape[2], width=images.shape[3], channels=images.shape[1])

    def read(self, path) -> RawImages:
        """One image file or a folder of them (sorted)."""
        path = Path(path)
        paths = image_files(path) if path.is_dir() else [path]
        if not paths:
            raise DataError(f"{path}: no image files ({', '.join(EXTENSIONS)})")
        return RawImages([str(item) for item in paths])

    def encode(self, raw: RawImages) -> np.ndarray:
        """(N, C, H, W) float32 in [0, 1], converted and resized like the training images."""
        mode = "RGB" if self.channels == 3 else "L" if self.channels == 1 else "keep"
        config = ImageConfig(size=(self.height, self.width), mode=mode)
        return decode_all([Path(path) for path in raw.paths], config)

    def state_dict(self) -> dict:
        return {
            "kind": self.kind,
            "height": self.height,
            "width": self.width,
            "channels": self.channels,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> ImageDecoder:
        return cls(height=state["height"], width=state["width"], channels=state["channels"])
