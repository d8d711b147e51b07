"""The run report (runs/<run>/report.html) opened in a real headless Chromium.

Debian's chromium package (.ci/run installs it), driven by Playwright for
Python with that executable: Playwright downloads no browser of its own here.
A missing Chromium is a failure under CI and a skip elsewhere (needs.py).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.needs import Need, missing

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

# Segments (start, end) drawn by each trace of the timeline, read from what plotly drew
# (_fullData holds the arrays decoded from the page's packed ones); NaN separates bars.
COUNT_BARS = """() => {
  const timeline = document.getElementById("timeline");
  const counts = {};
  for (const trace of timeline._fullData) {
    if (trace.type !== "scattergl") continue;
    let bars = 0;
    for (let i = 0; i + 1 < trace.x.length; i++) {
      if (Number.isFinite(trace.x[i]) && Number.isFinite(trace.x[i + 1])) { bars++; i++; }
    }
    counts[trace.name] = bars;
  }
  return counts;
}"""


@dataclass
class Opened:
    errors: list  # console errors and uncaught exceptions
    requests: list  # every URL the page asked for, its own included
    bars: dict  # outcome -> bars on the timeline
    traces: list  # name of every trace of every figure, in page order
    failure_rows: int  # rows of the failures table
    text: str  # the page's text


@pytest.fixture(scope="session")
def chromium():
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        missing(Need.CHROMIUM, "no chromium on PATH")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        # a new, empty profile each session; FLAGS keep the browser from calling home
        context = playwright.chromium.launch_persistent_context(profile, executable_path=executable, headless=True, args=FLAGS)
        yield context
        context.close()


def open_report(chromium, path: Path, screenshot: Path) -> Opened:
    """Load the report, wait until every figure is drawn, screenshot it and read what it shows.
    Any request but the page's own is refused (and recorded)."""
    page = chromium.new_page()
    errors, requests = [], []
    own = Path(path).resolve().as_uri()
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    page.route("**/*", lambda route: route.continue_() if route.request.url == own else route.abort())
    try:
        page.goto(own)
        page.wait_for_selector("body[data-drawn]", state="attached", timeout=60_000)
        page.screenshot(path=str(screenshot), full_page=True)
        return Opened(
            errors=errors, requests=requests, bars=page.evaluate(COUNT_BARS),
            traces=page.evaluate("() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(gd => gd.data.map(t => t.name))"),
            failure_rows=page.evaluate("() => Math.max(0, document.querySelectorAll('table.failures tr').length - 1)"),
            text=page.inner_text("body"),
        )
    finally:
        page.close()


def assert_clean(opened: Opened, path: Path) -> None:
    """No console error, no request but the page itself."""
    assert opened.errors == [], opened.errors
    assert opened.requests == [Path(path).resolve().as_uri()], opened.requests
