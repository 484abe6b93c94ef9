"""report.html in a real headless Chromium: the sections render, nothing is fetched, pixels show.

Skipped without ``/usr/bin/chromium`` (Debian: ``apt-get install -y chromium``). The network
check speaks the DevTools protocol over ``--remote-debugging-pipe`` (no port is opened):
every request the page makes is recorded, and a control page with an external image proves
that the recorder does see failures.
"""

from __future__ import annotations

import fcntl
import functools
import importlib.util
import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Chromium at /usr/bin/chromium (install: apt-get install -y chromium)",
)
SECTIONS = {"curves", "confusion-matrix", "classification-report", "final-metrics"}
WINDOW = (1366, 900)  # a laptop screen
TIMEOUT_S = 60


def _flags(profile: Path) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={profile}",
    ]


@functools.cache
def _builders():
    """The run-directory writer of the report unit tests (a sibling test folder)."""
    path = Path(__file__).parents[1] / "unit" / "report" / "run_builders.py"
    spec = importlib.util.spec_from_file_location("report_run_builders", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while defined
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    from scaletrain.report import write_report

    builders = _builders()
    run = builders.write_run(tmp_path_factory.mktemp("runs") / "digits", builders.digits_spec())
    return write_report(run)


def test_dump_dom_shows_every_section(report, tmp_path):
    result = subprocess.run(
        [str(CHROMIUM), *_flags(tmp_path / "profile"), "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=True,
    )
    page = _builders().read_page(result.stdout)
    assert page.ids >= SECTIONS, f"missing in the rendered DOM: {SECTIONS - page.ids}"
    assert len(page.tables["classification-report"]) == 1 + 10 + 3  # header, classes, averages
    assert page.tags.count("svg") >= 10
    external = [ref for ref in page.references if not ref[2].startswith(("#", "data:"))]
    assert not external, external


def test_screenshot_is_not_blank(report, tmp_path):
    from PIL import Image, ImageStat

    shot = tmp_path / "report.png"
    subprocess.run(
        [str(CHROMIUM), *_flags(tmp_path / "profile"), f"--screenshot={shot}", report.as_uri()],
        capture_output=True,
        timeout=TIMEOUT_S,
        check=True,
    )
    with Image.open(shot) as image:
        assert image.size == WINDOW
        gray = image.convert("L")
        assert ImageStat.Stat(gray).stddev[0] > 10, "the screenshot is (nearly) one color"
        assert len(gray.getcolors(maxcolors=256) or range(256)) > 20  # text and figures


def test_report_loads_with_no_failed_or_external_request(report, tmp_path):
    load = load_with_devtools(report.as_uri(), profile=tmp_path / "profile")
    assert load.requests[0] == report.as_uri()
    outside = [url for url in load.requests[1:] if not url.startswith("data:")]
    assert not outside, f"the report requested {outside}"
    assert not load.failures, load.failures
    assert not load.errors, load.errors
    # each section has a size on screen, i.e. it rendered
    for section_id in SECTIONS:
        assert load.widths[section_id] > 0, section_id


def test_recorder_sees_an_external_request_fail(tmp_path):
    """Control: a page loading an external image shows up as a failed request."""
    page = tmp_path / "external.html"
    page.write_text(
        '<!DOCTYPE html><html><body><img src="https://example.invalid/x.png"></body></html>'
    )
    load = load_with_devtools(page.as_uri(), profile=tmp_path / "profile")
    assert "https://example.invalid/x.png" in load.requests
    assert load.failures and load.errors


# --- a minimal DevTools-protocol client over --remote-debugging-pipe ---------------------
@dataclass
class PageLoad:
    requests: list[str] = field(default_factory=list)  # URLs, in order
    failures: list[dict] = field(default_factory=list)  # Network.loadingFailed params
    errors: list[str] = field(default_factory=list)  # console/network/security errors
    widths: dict[str, float] = field(default_factory=dict)  # section id -> rendered width


class _DevTools:
    """Chromium reads commands on fd 3 and writes replies on fd 4, NUL-separated JSON."""

    def __init__(self, profile: Path):
        to_read, self._to_browser = os.pipe()
        self._from_browser, from_write = os.pipe()
        command = [str(CHROMIUM), *_flags(profile), "--remote-debugging-pipe", "about:blank"]

        def wire_fds() -> None:  # in the child: put the pipe ends at fds 3 and 4
            read_end = fcntl.fcntl(to_read, fcntl.F_DUPFD, 10)
            write_end = fcntl.fcntl(from_write, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self.process = subprocess.Popen(
            command,
            pass_fds=(3, 4),
            preexec_fn=wire_fds,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_read)
        os.close(from_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, params: dict | None = None, *, session: str | None = None) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            reply = self.receive(deadline)
            if reply.get("id") == self._next_id:
                assert "error" not in reply, reply["error"]
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not any(event.get("method") == method for event in self.events):
            self.events.append(self.receive(deadline))

    def receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select(
                [self._from_browser], [], [], max(0.0, deadline - time.monotonic())
            )
            assert ready, "Chromium did not answer in time"
            chunk = os.read(self._from_browser, 1 << 20)
            assert chunk, "Chromium closed the DevTools pipe"
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def close(self) -> None:
        try:
            self.call("Browser.close")
        finally:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            os.close(self._to_browser)
            os.close(self._from_browser)


def load_with_devtools(url: str, *, profile: Path) -> PageLoad:
    """Open ``url`` in a fresh tab; record every request, failure and error until load."""
    browser = _DevTools(profile)
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})
        attached = browser.call(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        session = attached["sessionId"]
        for domain in ("Network", "Page", "Log", "Runtime"):
            browser.call(f"{domain}.enable", session=session)
        browser.call("Page.navigate", {"url": url}, session=session)
        browser.wait_for("Page.loadEventFired")
        script = (
            "Object.fromEntries([...document.querySelectorAll('[id]')]"
            ".map(e => [e.id, e.getBoundingClientRect().width]))"
        )
        widths = browser.call(
            "Runtime.evaluate", {"expression": script, "returnByValue": True}, session=session
        )["result"]["value"]
    finally:
        browser.close()
    return _summarize(browser.events, widths)


def _summarize(events: list[dict], widths: dict) -> PageLoad:
    load = PageLoad(widths=widths)
    for event in events:
        params = event.get("params", {})
        if event.get("method") == "Network.requestWillBeSent":
            load.requests.append(params["request"]["url"])
        elif event.get("method") == "Network.loadingFailed":
            load.failures.append(params)
        elif event.get("method") == "Log.entryAdded" and params["entry"]["level"] == "error":
            load.errors.append(params["entry"]["text"])
        elif event.get("method") == "Runtime.exceptionThrown":
            load.errors.append(json.dumps(params["exceptionDetails"]))
    return load
