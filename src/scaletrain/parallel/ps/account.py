"""What worker 0 writes into metrics.jsonl at the end of an async_ps run, from the servers'
summaries: the `ps` record (counts) and the `worker_lost` / `worker_rejoined` events; and
those membership records read back from server 0's log (`RUN/ps/server_0.jsonl`) on a
resume, since a stopped attempt's worker 0 never wrote them to metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

EVENTS = ("worker_lost", "worker_rejoined")
_MARKS = tuple(f'"event": "{event}"'.encode() for event in EVENTS)


def read_history(log: Path) -> list[dict]:
    """The membership records of an earlier attempt's log, in order (its push lines, one per
    push, are skipped unparsed; a line a kill cut short is no record)."""
    if not log.is_file():
        return []
    records = []
    with log.open("rb") as lines:
        for line in lines:
            if not any(mark in line for mark in _MARKS):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") in EVENTS:
                records.append(record)
    return records


def membership_events(first: dict) -> list[dict]:
    """metrics.jsonl events from server 0's summary: each worker lost, each takeover, placed
    at worker 0's step when it happened (`run_step`: the step axis of the report's curves)."""
    records = first.get("membership") or []
    events = []
    for index, record in enumerate(records):
        worker = record["worker"]
        at = {"step": record["run_step"]} if record.get("run_step") is not None else {}
        at["time"] = record.get("time")  # when, and which: the same one recalled is equal
        if record["event"] == "worker_lost":
            following = records[index + 1] if index + 1 < len(records) else {}
            taken = following.get("event") == "worker_rejoined" and following["worker"] == worker
            then = "a spare took its place" if taken else "the others trained on without it"
            detail = f"worker rank {worker} died; {then}"
            events.append({"event": "worker_lost", **at, "detail": detail, "worker": worker})
            continue
        events.append(
            {
                "event": "worker_rejoined",
                **at,
                "detail": f"{record['spare']} took over worker rank {worker} from step "
                f"{record['step'] + 1} (server 0 version {record['version']})",
                "worker": worker,
                "spare": record["spare"],
                "from_step": record["step"] + 1,
            }
        )
    return events


def ps_record(servers: list[dict], *, samples_per_step: int) -> dict:
    """The job's counts from every server's summary: per worker samples/s, the staleness
    histogram, dropped and scaled updates, bytes pushed and pulled."""
    histogram: dict[str, int] = {}
    for summary in servers:
        for key, count in summary["staleness_histogram"].items():
            histogram[key] = histogram.get(key, 0) + count
    first = servers[0]["workers"]  # every worker pushes to every server: server 0 saw all
    workers = {
        name: {
            "pushes": seen["pushes"],
            # pushes after the first over the time between the first and the last push
            "samples_per_s": (seen["pushes"] - 1) * samples_per_step / max(seen["seconds"], 1e-9),
        }
        for name, seen in first.items()
    }
    return {
        "servers": len(servers),
        "updates": sum(summary["applied"] for summary in servers),
        "dropped": sum(summary["dropped"] for summary in servers),
        "scaled": sum(summary["scaled"] for summary in servers),
        "bytes_pushed": sum(summary["bytes_pushed"] for summary in servers),
        "bytes_pulled": sum(summary["bytes_pulled"] for summary in servers),
        "staleness_histogram": dict(sorted(histogram.items(), key=lambda item: int(item[0]))),
        "workers": workers,
        "lost_workers": sorted({w for summary in servers for w in summary["lost_workers"]}),
        "rejoined": servers[0].get("rejoined", []),  # server 0 decides every takeover
        "membership": servers[0].get("membership", []),  # and sees every loss
    }
