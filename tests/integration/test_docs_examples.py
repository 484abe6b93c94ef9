"""Every ```python block of README.md and docs/*.md runs as written (at reduced size: see
docs_blocks.py), so a renamed argument or a changed return value fails here, not for a
reader. The pages run in one child process (one import of torch), each page's blocks in
order in one namespace and a folder of its own; a block marked `docs-test: skip (why)` is
reported skipped with its reason."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from docs_blocks import PAGES, ROOT, SHRINK, TINY_CONFIGS, collect

BLOCKS = [block for page in PAGES for block in collect(page)]
RUNNABLE_PAGES = sorted({block.page for block in BLOCKS if not block.skip})
SKIPPED = [block for block in BLOCKS if block.skip]


@pytest.fixture(scope="module")
def page_results(tmp_path_factory) -> dict:
    """{page: {"failed": where or None, "error": traceback, ...}} from one child process."""
    scratch = tmp_path_factory.mktemp("docs")
    path = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    # one OpenMP thread: the child shares the cores with the rest of the suite, and tiny
    # models on oversubscribed threads spend their time in barriers (2-3x slower)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    script = ROOT / "tests" / "integration" / "docs_blocks.py"
    finished = subprocess.run(
        [sys.executable, str(script), str(scratch / "results.json"), *RUNNABLE_PAGES],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    return json.loads((scratch / "results.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_python_blocks_of_the_page_run(page_results, page):
    result = page_results[page]
    assert result["failed"] is None, f"{result['failed']} failed:\n{result['error']}"


if SKIPPED:  # none today: every python block of the docs runs on a CPU

    @pytest.mark.parametrize("block", SKIPPED, ids=[block.where for block in SKIPPED])
    def test_block_marked_skip(block):
        pytest.skip(f"{block.where}: {block.skip}")


def test_each_shrinking_substitution_and_tiny_config_still_applies():
    """A SHRINK pattern no block matches means a doc changed and its block would run at full
    size; a TINY_CONFIGS file that is gone would leave its shrinking dead."""
    assert "docs/api.md" in RUNNABLE_PAGES and "README.md" in RUNNABLE_PAGES
    for pattern, _ in SHRINK:
        assert any(re.search(pattern, block.code) for block in BLOCKS), pattern
    for name in TINY_CONFIGS:
        assert (ROOT / "configs" / name).is_file(), name


def test_comments_before_a_fence_mark_skips_and_setups(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "Text.\n\n<!-- docs-test: skip (needs a GPU) -->\n```python\nrun_on_gpu()\n```\n\n"
        "1. Item:\n\n   <!-- docs-test: setup\n   X = [1]\n   -->\n   ```python\n   print(X)\n   ```\n"
        "```bash\nscaletrain --help\n```\n"
    )
    first, second = collect(page, root=tmp_path)
    assert (first.line, first.skip, first.setup, first.code) == (
        4,
        "needs a GPU",
        "",
        "run_on_gpu()\n",
    )
    assert (second.skip, second.setup, second.code) == (None, "X = [1]\n", "print(X)\n")


@pytest.mark.parametrize(
    "text",
    [
        "<!-- docs-test: skip (why) -->\nprose\n```python\nx\n```\n",
        "<!-- docs-test: skip (why) -->\n```bash\nls\n```\n",
    ],
)
def test_a_comment_not_just_before_a_python_fence_is_an_error(tmp_path, text):
    page = tmp_path / "page.md"
    page.write_text(text)
    with pytest.raises(ValueError, match="page.md:"):
        collect(page, root=tmp_path)
