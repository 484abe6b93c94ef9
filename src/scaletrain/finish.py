"""The end of a run that nothing returned depends on: TensorBoard's hparams and report.html.

The report took 1-2 s of a 3 s notebook run (bench/README.md, "outside the loop"), so
`train()` returns as soon as the metrics and summary.json are written, and one background
thread (not a daemon: the interpreter waits for it before it exits) draws it. The hparams
(milliseconds) are written before returning: fewer files change after the call returns.
`Run.wait()` or `wait_for_reports()` blocks until the report is on disk (call it before
deleting the run directory); the next `train()`/`resume()` of the process waits first too,
so two reports never draw at once (matplotlib is not thread-safe).
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

_lock = threading.Lock()
_pending: list[tuple[threading.Thread, list[BaseException]]] = []


def finish_run(
    root: Path, *, hparams: dict | None, final_metrics: dict, report: bool, background: bool
) -> None:
    """Write TensorBoard's hparams now (where `hparams` is given) and report.html (where
    `report`), in a background thread where `background`, else now."""
    if hparams is not None:
        _write_hparams(root, hparams, final_metrics)
    if not report:
        return
    if not background:
        _write_report(root)
        return
    errors: list[BaseException] = []
    thread = threading.Thread(
        target=_guarded,
        args=(errors, root),
        name="scaletrain-report",
        daemon=False,
    )
    with _lock:
        _pending.append((thread, errors))
    thread.start()


def wait_for_reports(*, raise_errors: bool = True) -> None:
    """Block until every report started by this process is written; re-raise the first
    error one of them met (it was kept, not printed from the thread), or warn with it."""
    with _lock:
        pending, _pending[:] = list(_pending), []
    first = None
    for thread, errors in pending:
        thread.join()
        first = first or (errors[0] if errors else None)
    if first is not None and raise_errors:
        raise first
    if first is not None:
        warnings.warn(f"writing a report failed: {first!r}", RuntimeWarning, stacklevel=2)


def _guarded(errors: list, root: Path) -> None:
    try:
        _write_report(root)
    except BaseException as exc:  # handed to whoever waits
        errors.append(exc)


def _write_hparams(root: Path, hparams: dict, final_metrics: dict) -> None:
    from scaletrain.metrics import MetricsLogger

    with MetricsLogger(root, tensorboard=True) as logger:
        logger.log_hparams(hparams, final_metrics)


def _write_report(root: Path) -> None:
    from scaletrain.report import write_report  # a leaf: reads run files only

    write_report(root)
