"""The ```python blocks of README.md and docs/*.md, and a runner that executes each page's
blocks in order in one namespace (a later block continues an earlier one), in a directory of
the page's own, at reduced size.

An HTML comment on the lines just before a fence (invisible on a rendered page) says how the
test treats the block:

    <!-- docs-test: skip (needs a GPU) -->     not run; the test reports it skipped, with why
    <!-- docs-test: setup                      Python run before the block: the names the
    X_new = X[:5]                              prose defines ("your module", "new data")
    -->

Reduced size: the page's code runs with the SHRINK substitutions applied (fewer epochs), in a
directory whose configs/ is the repository's with TINY_CONFIGS applied. Run as a script
(`python docs_blocks.py RESULTS.json PAGE...`, cwd = a scratch folder) it runs the pages and
writes one result per page.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import textwrap
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# (pattern, replacement) on the blocks' code: training lengths a user would pick, cut short.
SHRINK = [
    (r'"max_epochs": \d+', '"max_epochs": 2'),
    (r"train\.max_epochs=\d+", "train.max_epochs=2"),
    (r"finetune_epochs=\d+", "finetune_epochs=1"),
]
# configs/ as the blocks see it: dotted overrides on the repository's files.
TINY_CONFIGS = {
    "default.yaml": {"train.max_epochs": 1, "log.report": False},
    "ensemble-digits.yaml": {"train.max_epochs": 1, "ensemble.members": 2, "log.report": False},
    "gpt-stdlib.yaml": {
        "log.report": False,
        "model.n_layer": 1,
        "model.d_model": 32,
        "model.n_head": 2,
        "data.context_length": 32,
        "data.text.vocab_size": 300,
        "train.max_steps": 4,
        "train.eval_every_steps": 4,
    },
}

_FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
_SKIP = re.compile(r"^\s*<!-- docs-test: skip \((.+)\) -->\s*$")
_SETUP = re.compile(r"^\s*<!-- docs-test: setup\s*$")


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    line: int  # of the opening fence, 1-based
    code: str
    skip: str | None  # the reason, for a block not run
    setup: str  # run before the block ("" for none)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def collect(page: Path, *, root: Path = ROOT) -> list[Block]:
    """The page's python blocks with their docs-test comments, in page order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    name = page.relative_to(root).as_posix()
    blocks, skip, setup, index = [], None, "", 0
    while index < len(lines):
        line = lines[index]
        fence = _FENCE.match(line)
        if _SKIP.match(line):
            skip = _SKIP.match(line).group(1)
        elif _SETUP.match(line):
            end = next(i for i in range(index, len(lines)) if lines[i].strip() == "-->")
            setup += textwrap.dedent("\n".join(lines[index + 1 : end])) + "\n"
            index = end
        elif fence:
            indent, language = fence.groups()
            end = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "```")
            if language == "python":
                code = "\n".join(text[len(indent) :] for text in lines[index + 1 : end])
                blocks.append(Block(name, index + 1, code + "\n", skip, setup))
            elif skip or setup:
                raise ValueError(
                    f"{name}:{index + 1}: a docs-test comment before a non-python fence"
                )
            skip, setup, index = None, "", end
        elif line.strip() and (skip or setup):
            raise ValueError(f"{name}:{index + 1}: a docs-test comment not just before a fence")
        index += 1
    return blocks


def shrink(code: str) -> str:
    for pattern, replacement in SHRINK:
        code = re.sub(pattern, replacement, code)
    return code


def write_tiny_configs(folder: Path) -> None:
    """The repository's configs/ under `folder`, with TINY_CONFIGS applied."""
    shutil.copytree(ROOT / "configs", folder / "configs")
    for name, overrides in TINY_CONFIGS.items():
        path = folder / "configs" / name
        config = yaml.safe_load(path.read_text())
        for key, value in overrides.items():
            *parents, leaf = key.split(".")
            section = config
            for part in parents:
                section = section.setdefault(part, {})
            section[leaf] = value
        path.write_text(yaml.safe_dump(config, sort_keys=False))


def run_page(page: Path) -> dict:
    """The page's runnable blocks in order, in one namespace; stops at the first failure."""
    from scaletrain.finish import wait_for_reports

    namespace: dict = {"__name__": "__main__"}
    start, where, seconds = time.perf_counter(), f"{page.name} (a report)", {}
    try:
        for block in collect(page):
            if block.skip:
                continue
            where, block_start = block.where, time.perf_counter()
            if block.setup:
                exec(compile(block.setup, f"{where} (setup)", "exec"), namespace)
            exec(compile(shrink(block.code), where, "exec"), namespace)
            seconds[where] = round(time.perf_counter() - block_start, 1)
        where = f"{page.name} (a report)"
        wait_for_reports()  # the page's runs draw them in background threads
    except BaseException:
        wait_for_reports(raise_errors=False)  # before the next page changes directory
        return {"failed": where, "error": traceback.format_exc(limit=-8)}
    return {"failed": None, "seconds": round(time.perf_counter() - start, 1), "blocks": seconds}


def main(results_path: str, *pages: str) -> None:
    """Each page in a folder of its own (runs/ of one page never meets another's)."""
    scratch, results = Path.cwd(), {}
    for page in pages:
        folder = scratch / Path(page).stem
        folder.mkdir()
        write_tiny_configs(folder)
        os.chdir(folder)
        results[page] = run_page(ROOT / page)
        os.chdir(scratch)
    Path(results_path).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
