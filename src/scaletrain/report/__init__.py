"""Reports people look at: one self-contained HTML page per run, and run comparisons.

Reads only the files of run directories (``config.yaml``, ``plan.json``, ``metrics.jsonl``,
``summary.json``, ``model_summary.json``, ``predictions/*.npz``), so it works on copied and
on unfinished runs.
"""

from __future__ import annotations

from scaletrain.report.compare import write_compare
from scaletrain.report.html import write_report

__all__ = ["write_compare", "write_report"]
