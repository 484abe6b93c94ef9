"""The end of a run that nothing returned depends on: TensorBoard's hparams and report.html.

They took 1-2 s of a 3 s notebook run (bench/README.md, "outside the loop"), so `train()`
returns as soon as the metrics and summary.json are written, and one background thread (not a
daemon: the interpreter waits for it before it exits) writes them. `Run.wait()` or
`wait_for_reports()` blocks until they are on disk; the next `train()`/`resume()` of the
process waits first too, so two reports never draw at once (matplotlib is not thread-safe).
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
    """Write TensorBoard's hparams (where `hparams` is given) and report.html (where
    `report`), in a background thread where `background`, else now."""
    if hparams is None and not report:
        return
    if not background:
        _write(root, hparams, final_metrics, report)
        return
    errors: list[BaseException] = []
    thread = threading.Thread(
        target=_guarded,
        args=(errors, root, hparams, final_metrics, report),
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


def _guarded(errors: list, root: Path, hparams, final_metrics: dict, report: bool) -> None:
    try:
        _write(root, hparams, final_metrics, report)
    except BaseException as exc:  # handed to whoever waits
        errors.append(exc)


def _write(root: Path, hparams: dict | None, final_metrics: dict, report: bool) -> None:
    if hparams is not None:
        from scaletrain.metrics import MetricsLogger

        with MetricsLogger(root, tensorboard=True) as logger:
            logger.log_hparams(hparams, final_metrics)
    if report:
        from scaletrain.report import write_report  # a leaf: reads run files only

        write_report(root)
