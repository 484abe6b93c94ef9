"""The Parameter server section: drawn from the `ps` record of metrics.jsonl, absent without."""

import calendar
import json

import yaml
from run_builders import read_page

from scaletrain.parallel.ps.account import membership_events
from scaletrain.report import write_report
from scaletrain.report.curves import step_axis
from scaletrain.report.plots import Marker
from scaletrain.report.rundata import read_run

RECORD = {
    "servers": 2,
    "updates": 57,
    "dropped": 3,
    "scaled": 0,
    "bytes_pushed": 5 * 2**20,
    "bytes_pulled": 2**20,
    "staleness_histogram": {"0": 40, "1": 17, "5": 3},
    "workers": {
        "0": {"pushes": 30, "samples_per_s": 812.5},
        "1": {"pushes": 30, "samples_per_s": 400.0},
    },
}


def write_run(tmp_path, records):
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump(
            {"run": {"name": "ps"}, "parallel": {"strategy": "async_ps", "ps": {"staleness": 2}}}
        )
    )
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return write_report(tmp_path).read_text()


def test_the_section_shows_the_servers_counts(tmp_path):
    html = write_run(
        tmp_path, [{"split": "train", "step": 30, "loss": 1.0}, {"step": 30, "ps": RECORD}]
    )
    part = html[html.index('<section id="parameter-server">') :]
    part = part[: part.index("</section>")]
    for text in (
        "57",
        "<dd>3</dd>",
        "<dd>5</dd>",
        "<dd>1</dd>",
        "812.5",
        "400.0",
        "worker 1",
        "tau) = 2",
    ):
        assert text in part, text
    assert 'data-value="0.05"' in part  # 3 of 60 pushes had staleness 5


def test_no_section_without_a_parameter_server(tmp_path):
    html = write_run(tmp_path, [{"split": "train", "step": 30, "loss": 1.0}])
    assert 'id="parameter-server"' not in html


LOST_AT = calendar.timegm((2026, 12, 5, 7, 30, 15))  # 2026-12-05 07:30:15 UTC
# server 0's membership records as a resumed run's ps record carries them: worker 1 taken
# over by spare0 in the first attempt, worker 2 lost with no spare left in the second
MEMBERSHIP = [
    {"event": "worker_lost", "worker": 1, "version": 30, "process": "worker1"},
    {
        "event": "worker_rejoined",
        "worker": 1,
        "spare": "spare0",
        "step": 14,
        "incarnation": 1,
        "spare_rank": 3,
        "version": 30,
    },
    {"event": "worker_lost", "worker": 2, "version": 88, "process": "worker2"},
]
WHEN = [(LOST_AT, 16), (LOST_AT, 16), (LOST_AT + 60, 44)]  # (time, worker 0's step)
MEMBERSHIP = [
    {**record, "time": moment, "run_step": step}
    for record, (moment, step) in zip(MEMBERSHIP, WHEN, strict=True)
]


def test_lost_workers_and_their_takeovers_are_a_table_and_marks_on_the_curves(tmp_path):
    events = membership_events({"membership": MEMBERSHIP})
    records = [
        {"split": "train", "step": step, "loss": 1.0, "samples_per_s": 900.0}
        for step in (10, 20, 30, 40, 50, 60)
    ]
    records += [{**event} for event in events]  # at worker 0's step (run_step)
    records.append({"step": 60, "ps": {**RECORD, "membership": MEMBERSHIP}})
    page = read_page(write_run(tmp_path, records))
    header, *rows = page.tables["ps-takeovers"]
    assert [cell.text for cell in header][:4] == [
        "worker",
        "time (UTC)",
        "step (worker 0)",
        "lost process",
    ]
    assert [[cell.text for cell in row] for row in rows] == [
        ["worker 1", "2026-12-05 07:30:15", "16", "worker1", "spare0", "3", "1", "15", "30"],
        [
            "worker 2",
            "2026-12-05 07:31:15",
            "44",
            "worker2",
            "none: trained on without it",
            "—",
            "—",
            "—",
            "88",
        ],
    ]
    markers = step_axis(read_run(tmp_path)).markers
    assert Marker(16.0, "worker_lost") in markers and Marker(16.0, "worker_rejoined") in markers
    assert Marker(44.0, "worker_lost") in markers


def test_no_takeover_table_without_a_lost_worker(tmp_path):
    html = write_run(tmp_path, [{"step": 30, "ps": {**RECORD, "membership": []}}])
    assert "ps-takeovers" not in read_page(html).tables
