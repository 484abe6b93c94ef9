"""`data.subsample.residuals_file`: a gradient-boosting round's targets, what the rounds
before it left unexplained, replacing each split's own (standardized, as the loss sees them).

Val and test get theirs too, so the member's validation loss (and its best checkpoint) measures
how well it fits the residuals it was asked to fit.
"""

from __future__ import annotations

from pathlib import Path

from scaletrain.data.bundle import DataBundle
from scaletrain.errors import UserError

SPLITS = ("train", "val", "test")


def with_residual_targets(bundle: DataBundle, path: str) -> DataBundle:
    """`bundle` with every split's targets read from `path` (safetensors, one tensor a split)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        residuals = load_file(str(Path(path)))
    except (OSError, SafetensorError) as exc:
        raise UserError(f"data.subsample.residuals_file: cannot read {path} ({exc})") from None
    for name in SPLITS:
        split = getattr(bundle, name)
        if split is None:
            continue
        found = residuals.get(name)
        if split.targets is None or found is None or found.shape != split.targets.shape:
            raise UserError(
                f"data.subsample.residuals_file: {path} must hold `{name}` targets of shape "
                f"{None if split.targets is None else tuple(split.targets.shape)}, got "
                f"{None if found is None else tuple(found.shape)}"
            )
        split.targets = found.to(split.targets.dtype)
    return bundle
