"""Built-in ``stdlib_text``: the running Python's own standard-library sources, offline.

Classification: which of eight top-level packages a chunk of source comes from. Language
modeling (``data.task: language_model``): the same files as one corpus. Files are found
from ``sysconfig``, listed in sorted order without their test folders, and cut into chunks
of whole lines; every chunk carries its file as a split group, so a file's chunks never sit
in two splits (no leakage through shared code), and the chunks of a file concatenate back to
the file for language modeling.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np

from scaletrain.data.raw import RawData, RawTexts
from scaletrain.data.sources.registry import register_dataset
from scaletrain.errors import DataError

# Present from Python 3.10 to 3.13 with 5+ files each outside test folders.
PACKAGES = ("asyncio", "email", "http", "importlib", "json", "multiprocessing", "unittest", "xml")
CHUNK_CHARS = 1024  # a chunk ends at the line that would take it past this many characters
_TEST_FOLDERS = frozenset({"test", "tests", "idle_test"})


def stdlib_files(root: Path | None = None) -> list[tuple[str, Path]]:
    """(package, file) for every .py file of PACKAGES, in sorted path order."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    found = []
    for package in PACKAGES:
        files = sorted((root / package).rglob("*.py"))
        files = [path for path in files if not _TEST_FOLDERS & set(path.relative_to(root).parts)]
        if not files:
            raise DataError(f"stdlib_text: no .py files for package {package!r} under {root}")
        found += [(package, path) for path in files]
    return found


def chunk_lines(text: str, *, max_chars: int = CHUNK_CHARS) -> list[str]:
    """Consecutive whole lines of at most ``max_chars`` (a longer line is its own chunk)."""
    chunks, current, size = [], [], 0
    for line in text.splitlines(keepends=True):
        if current and size + len(line) > max_chars:
            chunks.append("".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        chunks.append("".join(current))
    return chunks


@register_dataset("stdlib_text")
def load_stdlib_text() -> RawData:
    """Python stdlib source chunks: 8 packages to classify (or data.task=language_model)."""
    texts, labels, groups = [], [], []
    for file_id, (package, path) in enumerate(stdlib_files()):
        for chunk in chunk_lines(path.read_text(encoding="utf-8")):
            texts.append(chunk)
            labels.append(package)
            groups.append(file_id)
    return RawData(
        inputs=RawTexts(np.array(texts, dtype=object)),
        labels=np.array(labels),
        origin="builtin dataset 'stdlib_text'",
        task="classification",
        groups=np.array(groups),
        input_kind="text",
    )
