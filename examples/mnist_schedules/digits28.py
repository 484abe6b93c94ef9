"""MNIST-shaped data without a download: scikit-learn's 8x8 digits upsampled to 28x28
(bilinear), scaled to 0..255 like MNIST pixels and flattened to 784 features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits


def write_digits28(path: Path, *, num_samples: int | None = None) -> Path:
    """Write ``x`` (N, 784) uint8 and ``label`` (N,) int64 to an .npz (the first N digits)."""
    digits = load_digits()
    images = torch.from_numpy(digits.images[:num_samples].astype(np.float32))[:, None]
    large = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
    pixels = (large / 16.0 * 255.0).round().clamp(0, 255).to(torch.uint8)  # digits are 0..16
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        x=pixels.reshape(len(pixels), 28 * 28).numpy(),
        label=digits.target[:num_samples].astype(np.int64),
    )
    return path
