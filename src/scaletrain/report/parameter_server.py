"""The report's Parameter server section (`parallel.strategy: async_ps`), from the record
worker 0 appends to metrics.jsonl once every worker finished: the servers' counts, and the
workers lost and taken over by spare workers (across resumes: server 0 keeps them)."""

from __future__ import annotations

import time
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
            *_membership(ps.get("membership") or []),
        ],
    )


MEMBERSHIP_HEADERS = (
    "worker",
    "time (UTC)",
    "step (worker 0)",
    "lost process",
    "taken over by",
    "spare rank",
    "incarnation",
    "from its step",
    "server 0 version",
)


def _membership(records: list[dict]) -> list[Markup]:
    """A row per lost worker: when, which process, and the spare that took it over."""
    rows = []
    for index, record in enumerate(records):
        if not isinstance(record, dict) or record.get("event") != "worker_lost":
            continue
        following = records[index + 1] if index + 1 < len(records) else None
        taken = isinstance(following, dict) and following.get("event") == "worker_rejoined"
        takeover = following if taken and following.get("worker") == record.get("worker") else {}
        step = takeover.get("step")
        rows.append(
            [
                f"worker {record.get('worker')}",
                _clock(record.get("time")),
                record.get("run_step"),
                record.get("process"),
                takeover.get("spare", "none: trained on without it"),
                takeover.get("spare_rank"),
                takeover.get("incarnation"),
                step + 1 if isinstance(step, int) else None,
                record.get("version"),
            ]
        )
    if not rows:
        return []
    return [
        table(
            MEMBERSHIP_HEADERS,
            rows,
            table_id="ps-takeovers",
            caption="Workers lost, and the spare workers that took them over",
        ),
        note(
            "A spare worker continues the lost worker's data shard from the step after its "
            "last push; the curves mark both events at worker 0's step."
        ),
    ]


def _clock(seconds: Any) -> str | None:
    if not isinstance(seconds, (int, float)):
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def _mb(value: Any) -> float | None:
    return value / BYTES_PER_MB if isinstance(value, (int, float)) else None
