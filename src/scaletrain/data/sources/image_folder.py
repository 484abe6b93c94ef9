"""``image_folder``: one sub-folder per class of PNG/JPEG/… files, decoded with Pillow.

Every image is converted to one mode (``data.image.mode``: RGB by default, so a stray
greyscale or RGBA file is converted, not refused) and resized to ``data.image.size`` (or must
match the first image's size). Pixels become float32 in [0, 1], shaped (N, C, H, W); the
channel statistics are then fit on the train split like any other input. The ``ImageDecoder``
(transforms/image.py) saves the size and mode, so predict reads new image files the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scaletrain.config import DataConfig, ImageConfig
from scaletrain.data.raw import RawData
from scaletrain.data.sources.registry import register_source
from scaletrain.errors import ConfigError, DataError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def image_files(folder: Path) -> list[Path]:
    """Image files directly or deeper under ``folder``, in sorted order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)


def decode_image(path: Path, *, mode: str, size: tuple[int, int] | None):
    """(C, H, W) uint8 pixels; unreadable bytes raise a DataError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            original_mode = image.mode
            if mode != "keep" and image.mode != mode:
                image = image.convert(mode)
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot read as an image ({exc})") from None
    pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
    return pixels.transpose(2, 0, 1), original_mode


def decode_all(paths: list[Path], cfg: ImageConfig) -> np.ndarray:
    """(N, C, H, W) float32 in [0, 1]; sizes (and modes, with ``keep``) must agree."""
    size = tuple(cfg.size) if cfg.size is not None else None
    images, first_mode = [], None
    for path in paths:
        pixels, mode = decode_image(path, mode=cfg.mode, size=size)
        first_mode = first_mode or mode
        if cfg.mode == "keep" and mode != first_mode:
            raise DataError(
                f"{path}: image mode {mode!r} differs from {first_mode!r} of {paths[0]}; "
                "set data.image.mode=RGB (or L) to convert every image"
            )
        if images and pixels.shape != images[0].shape:
            raise DataError(
                f"{path}: image of shape {pixels.shape} (C, H, W) differs from "
                f"{images[0].shape} of {paths[0]}; set data.image.size=[height, width]"
            )
        images.append(pixels)
    # Divided in float32, exactly as the uint8 shards are when read back.
    return np.stack(images).astype(np.float32) / np.float32(255)


@register_source("image_folder")
def read_image_folder(cfg: DataConfig) -> RawData:
    """Class sub-folders of image files; the folder name is the label."""
    if cfg.path is None:
        raise ConfigError("data.path: not set; give a folder with one sub-folder per class")
    root = Path(cfg.path).expanduser()
    if not root.is_dir():
        raise DataError(f"data.path: folder not found: {root}")
    classes = sorted(child.name for child in root.iterdir() if child.is_dir())
    paths, labels = [], []
    for name in classes:
        files = image_files(root / name)
        paths += files
        labels += [name] * len(files)
    if len(classes) < 2 or not paths:
        raise DataError(
            f"{root}: expected one sub-folder of images per class (2+ classes), found "
            f"{len(classes)} folder(s) and {len(paths)} image(s)"
        )
    return RawData(
        inputs=decode_all(paths, cfg.image),
        labels=np.array(labels),
        origin=str(root),
        is_image=True,
        input_kind="image",
    )
