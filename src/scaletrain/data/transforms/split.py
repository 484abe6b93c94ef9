"""Train/val/test split: a pure function of the sample count, fractions, labels and seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scaletrain.errors import DataError


class StratifyError(DataError):
    """A class has too few samples for a stratified cut; ``sample`` is the position (in the
    count given to the split) of its first sample, ``label`` its label."""

    def __init__(self, message: str, *, sample: int, label, count: int):
        super().__init__(message)
        self.sample, self.label, self.count = sample, label, count


@dataclass(frozen=True)
class SplitIndices:
    """Sorted sample indices of each split; None where its fraction is 0."""

    train: np.ndarray
    val: np.ndarray | None
    test: np.ndarray | None


def split_indices(
    num_samples: int,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    stratify_labels: np.ndarray | None = None,
) -> SplitIndices:
    """Hold out test, then val, each as a share of ALL samples; stratified when labels given."""
    everything = np.arange(num_samples)
    rest, test = _cut(everything, fraction=test_fraction, seed=seed, labels=stratify_labels)
    # val_fraction is a share of all samples, so rescale it to the share of what is left.
    rest_fraction = val_fraction / (1.0 - test_fraction)
    rest_labels = None if stratify_labels is None else stratify_labels[rest]
    train, val = _cut(rest, fraction=rest_fraction, seed=seed + 1, labels=rest_labels)
    return SplitIndices(train=train, val=val, test=test)


def split_groups(
    groups: np.ndarray,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    stratify_labels: np.ndarray | None = None,
) -> SplitIndices:
    """Split whole groups (e.g. source files), so no group has samples in two splits.

    The fractions count groups, not samples; a group's stratification label is the label of
    its first sample.
    """
    names, first, group_of_sample = np.unique(groups, return_index=True, return_inverse=True)
    group_labels = None if stratify_labels is None else stratify_labels[first]
    try:
        cut = split_indices(
            len(names),
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
            stratify_labels=group_labels,
        )
    except StratifyError as exc:  # name the group's first sample, not the group
        exc.sample = int(first[exc.sample])
        raise

    def samples_of(group_ids: np.ndarray | None) -> np.ndarray | None:
        if group_ids is None:
            return None
        return np.flatnonzero(np.isin(group_of_sample.reshape(-1), group_ids))

    return SplitIndices(samples_of(cut.train), samples_of(cut.val), samples_of(cut.test))


def _cut(
    indices: np.ndarray, *, fraction: float, seed: int, labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    if fraction == 0:
        return indices, None
    try:
        from sklearn.model_selection import train_test_split  # slow import: on first use

        kept, held = train_test_split(
            indices, test_size=fraction, random_state=seed % 2**32, stratify=labels
        )
    except ValueError as exc:
        if labels is not None:
            _raise_for_rare_class(indices, labels, fraction=fraction)
        hint = "set data.stratify=false or " if labels is not None else ""
        raise DataError(
            f"cannot split {len(indices)} samples with a held-out share of {fraction:.3g}: "
            f"{exc}; {hint}change data.val_fraction / data.test_fraction"
        ) from None
    return np.sort(kept), np.sort(held)


def _raise_for_rare_class(indices: np.ndarray, labels: np.ndarray, *, fraction: float) -> None:
    """A class with one sample cannot be stratified: raise naming the first such sample."""
    values, first, counts = np.unique(labels, return_index=True, return_counts=True)
    rare = np.flatnonzero(counts < 2)
    if not len(rare):
        return  # another reason (a held-out share smaller than the number of classes)
    pick = rare[np.argmin(first[rare])]
    sample = int(indices[first[pick]])
    raise StratifyError(
        f"sample {sample} (0-based): its label is the only sample of class {values[pick]!r} "
        f"among {len(indices)} samples, and a stratified split (held-out share "
        f"{fraction:.3g}) needs at least 2 per class; set data.stratify=false or fix the label",
        sample=sample,
        label=values[pick],
        count=int(counts[pick]),
    )
