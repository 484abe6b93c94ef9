"""The report's Parameter server section (`parallel.strategy: async_ps`), from the record
worker 0 appends to metrics.jsonl once every worker finished: the servers' counts."""

from __future__ import annotations

from typing import Any

from scaletrain.report.page import Markup, facts, note, section, table

BYTES_PER_MB = 2**20


def parameter_server_section(run) -> Markup:
    """Updates applied and dropped, bytes moved, samples/s per worker, staleness histogram."""
    ps: dict[str, Any] | None = run.parameter_server
    if not ps:
        return Markup("")
    pushes = sum(int(count) for count in (ps.get("staleness_histogram") or {}).values())
    tiles = facts(
        [
            ("servers", ps.get("servers")),
            ("updates applied", ps.get("updates")),
            ("dropped (too stale)", ps.get("dropped")),
            ("scaled down", ps.get("scaled")),
            ("MB pushed", _mb(ps.get("bytes_pushed"))),
            ("MB pulled", _mb(ps.get("bytes_pulled"))),
        ]
    )
    workers = ps.get("workers") or {}
    worker_rows = [
        [f"worker {name}", seen.get("pushes"), seen.get("samples_per_s")]
        for name, seen in workers.items()
        if isinstance(seen, dict)
    ]
    histogram = ps.get("staleness_histogram") or {}
    staleness_rows = [
        [str(key), count, count / pushes if pushes else None] for key, count in histogram.items()
    ]
    tau = ((run.config.get("parallel") or {}).get("ps") or {}).get("staleness")
    return section(
        "parameter-server",
        "Parameter server",
        [
            tiles,
            table(["worker", "pushes", "samples/s"], worker_rows, caption="Workers", digits=1),
            table(
                ["staleness", "pushes", "share"],
                staleness_rows,
                caption="Staleness of each push (updates applied since its parameters were pulled)",
            ),
            note(f"parallel.ps.staleness (tau) = {tau}: older pushes were dropped or scaled down"),
        ],
    )


def _mb(value: Any) -> float | None:
    return value / BYTES_PER_MB if isinstance(value, (int, float)) else None
