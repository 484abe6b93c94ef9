"""The Parameter server section: drawn from the `ps` record of metrics.jsonl, absent without."""

import json

import yaml

from scaletrain.report import write_report

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
