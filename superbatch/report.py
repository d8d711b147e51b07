"""The run report: runs/<run>/report.html, one page that opens offline.

Written at the end of every run (flow.py) and on demand (--report --run
NAME), from what runs/<run>/facts.jsonl holds (superbatch/facts.py), so the
report of a resumed run covers all of its sessions.

The charts are plotly figures. plotly.js itself (4.8 MB, most of the page's
5 MB budget) is embedded gzip-compressed and unpacked by the browser
(DecompressionStream): the page needs no network, and 20,000 tasks still fit.
The timeline is one WebGL line trace per outcome, each task attempt a segment
of it, its numbers packed as typed arrays.
"""

import base64
import datetime
import functools
import gzip
import html
import json
import os
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .facts import first_of, latest_by_task, read_facts

REPORT_FILE = "report.html"
COLOURS = {"succeeded": "#2e7d32", "failed": "#c62828", "timed out": "#ef6c00", "retried": "#8e24aa", "requeued": "#546e7a"}
UNNAMED_LANE = "earlier attempts (Batch names no node)"
SLOWEST = 10  # tasks named under the histogram
FAILURES_SHOWN = 100  # rows of the failures table; the rest are in runs/<run>/logs/


def write_report(run_dir: Path) -> Path:
    """Write runs/<run>/report.html from the run's facts; returns its path."""
    run_dir = Path(run_dir)
    page = render(run_dir.name, read_facts(run_dir))
    path = run_dir / REPORT_FILE
    partial = path.with_suffix(".html.partial")
    partial.write_text(page, encoding="utf-8")
    os.replace(partial, path)
    return path


def render(run_name: str, facts: list) -> str:
    tasks = [fact for fact in facts if fact.get("kind") == "task"]
    sessions = [fact for fact in facts if fact.get("kind") == "session"]
    nodes = [fact for fact in facts if fact.get("kind") == "nodes"]
    latest = latest_by_task(facts)
    origin = first_of([s.get("started") for s in sessions] + [a.get("start") for t in tasks for a in t.get("attempts", [])]) or 0.0

    figures, sections = {}, [_overview(run_name, sessions, latest, origin)]
    if tasks:
        figures["timeline"], drawn, undrawn = timeline(tasks, nodes, origin)
        note = f" {undrawn} attempts have no times and are not drawn." if undrawn else ""
        sections.append(_section("Timeline", f"Each task attempt is a bar on the lane where it ran ({drawn} bars), coloured by how it ended; "
                                 f"retried and requeued attempts have colours of their own.{note}", "timeline"))
        figures["durations"], slowest = durations(latest)
        sections.append(_section("Task durations", "The last attempt of each task, from its start to its end.", "durations") + slowest)
    sections.append(_failures(run_name, latest))
    phases = [fact for fact in facts if fact.get("kind") == "phases"]
    if phases:
        figures["phases"] = phase_chart(phases)
        sections.append(_section("Phases", "Wall seconds of each phase, per session of the run (a resumed run has several).", "phases"))
    sections.append(cost_block(facts))
    return _page(run_name, sections, figures)


# --- the figures ----------------------------------------------------------------


def timeline(tasks: list, nodes: list, origin: float):
    """The lanes with a bar per attempt; beneath, the pool's node count where there is one.
    Returns (figure, bars drawn, attempts without times)."""
    attempts = [(fact["index"], attempt) for fact in tasks for attempt in fact.get("attempts", [])]
    lanes = sorted({attempt.get("where") or UNNAMED_LANE for _, attempt in attempts}, key=_natural)
    lane_of = {name: number for number, name in enumerate(lanes)}
    rows = 2 if nodes else 1
    figure = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.04,
                           row_heights=[0.78, 0.22] if rows == 2 else [1.0])
    width = max(2.0, min(14.0, 320.0 / max(1, len(lanes))))
    drawn = undrawn = 0
    for outcome in COLOURS:
        mine = [(index, a) for index, a in attempts if a.get("outcome") == outcome]
        x, y, task = [], [], []
        for index, attempt in mine:
            start, end = attempt.get("start"), attempt.get("end")
            if start is None and end is None:
                undrawn += 1
                continue
            start, end = (end if start is None else start) - origin, (start if end is None else end) - origin
            lane = lane_of[attempt.get("where") or UNNAMED_LANE]
            x += [start, end, np.nan]
            y += [lane, lane, np.nan]
            task += [index, index, -1]
        if not x:
            continue
        drawn += len(x) // 3
        figure.add_trace(go.Scattergl(
            x=np.array(x, dtype=np.float32), y=np.array(y, dtype=np.float32), customdata=np.array(task, dtype=np.int32),
            mode="lines", line={"color": COLOURS[outcome], "width": width}, name=outcome, connectgaps=False,
            hovertemplate="task %{customdata}<br>%{x:.1f} s<extra>" + outcome + "</extra>",
        ), row=1, col=1)
    figure.update_yaxes(tickvals=list(range(len(lanes))), ticktext=lanes, autorange="reversed", title_text="node / worker", row=1, col=1)
    if nodes:
        t = np.array([sample["t"] - origin for sample in nodes], dtype=np.float32)
        for key, label in (("dedicated", "dedicated nodes"), ("spot", "spot nodes")):
            figure.add_trace(go.Scatter(x=t, y=np.array([sample.get(key, 0) for sample in nodes], dtype=np.int32), name=label,
                                        mode="lines+markers", line={"shape": "hv"}), row=2, col=1)
        figure.update_yaxes(title_text="nodes", rangemode="tozero", row=2, col=1)
    figure.update_xaxes(title_text=f"seconds since {_clock(origin)}", row=rows, col=1)
    figure.update_layout(height=min(1400, 260 + 22 * len(lanes) + (160 if nodes else 0)), margin={"l": 10, "r": 10, "t": 30, "b": 40},
                         legend={"orientation": "h", "y": 1.02, "yanchor": "bottom"})
    return figure, drawn, undrawn


def durations(latest: dict):
    """A histogram of the last attempt's duration of every task, and the slowest tasks as a table."""
    rows = []
    for index, fact in latest.items():
        attempts = [a for a in fact.get("attempts", []) if a.get("start") is not None and a.get("end") is not None]
        if attempts:
            rows.append((attempts[-1]["end"] - attempts[-1]["start"], index, attempts[-1].get("where", ""), fact.get("outcome", "")))
    seconds = np.array([row[0] for row in rows], dtype=np.float32)
    figure = go.Figure(go.Histogram(x=seconds, marker_color=COLOURS["succeeded"], hovertemplate="%{x} s: %{y} tasks<extra></extra>"))
    figure.update_layout(height=320, bargap=0.05, xaxis_title="seconds", yaxis_title="tasks", margin={"l": 10, "r": 10, "t": 20, "b": 40})
    rows.sort(reverse=True)
    body = "".join(f"<tr><td>{index}</td><td>{duration:.2f} s</td><td>{html.escape(where)}</td><td>{html.escape(outcome)}</td></tr>"
                   for duration, index, where, outcome in rows[:SLOWEST])
    table = (f"<h3>The {min(SLOWEST, len(rows))} slowest tasks</h3><table class='slowest'><tr><th>task</th><th>duration</th>"
             f"<th>where</th><th>outcome</th></tr>{body}</table>") if rows else ""
    return figure, table


def phase_chart(phases: list):
    figure = go.Figure()
    for fact in phases:
        names = list(fact.get("phases", {}))
        figure.add_trace(go.Bar(y=names, x=[fact["phases"][name] for name in names], orientation="h",
                                name=f"session {fact.get('session', '?')}", hovertemplate="%{y}: %{x:.2f} s<extra></extra>"))
    figure.update_layout(height=120 + 28 * max(len(f.get("phases", {})) for f in phases), barmode="group", xaxis_title="seconds",
                         margin={"l": 10, "r": 10, "t": 20, "b": 40})
    return figure


COST_ROWS = [  # (key of the cost block, what the page calls it)
    ("node_hours_dedicated", "dedicated node-hours"), ("node_hours_spot", "spot node-hours"),
    ("task_hours", "task-hours"), ("utilization", "utilization (busy / allocated slot time)"),
    ("preemptions", "preemptions"), ("idle_node_minutes", "idle node-minutes after the last task"),
    ("price_per_node_hour", "price per node-hour"), ("price_per_spot_node_hour", "price per spot node-hour"),
    ("estimated_cost", "estimated cost"),
]


def cost_block(facts: list) -> str:
    """What each session's pool cost, as the azure backend measured it (cost.py);
    the other backends pay for no machine and write no cost."""
    costs = [fact for fact in facts if fact.get("kind") == "cost"]
    if not costs:
        return ""
    head = "".join(f"<th>session {fact.get('session')}</th>" for fact in costs)
    rows = "".join(
        f"<tr><td>{html.escape(label)}</td>" + "".join(f"<td>{html.escape(_cost_value(fact, key))}</td>" for fact in costs) + "</tr>"
        for key, label in COST_ROWS)
    return f"<section class=\"cost\"><h2>Cost</h2><table><tr><th></th>{head}</tr>{rows}</table></section>"


def _cost_value(fact: dict, key: str) -> str:
    value = fact.get(key)
    if value is None:
        return "unknown"
    if key in ("estimated_cost", "price_per_node_hour", "price_per_spot_node_hour"):
        return f"{value:g} {fact.get('currency') or ''}".strip()
    return f"{value:g}" if isinstance(value, float) else str(value)


# --- the page ---------------------------------------------------------------------


def _overview(run_name: str, sessions: list, latest: dict, origin: float) -> str:
    outcomes: dict = {}
    for fact in latest.values():
        outcomes[fact.get("outcome")] = outcomes.get(fact.get("outcome"), 0) + 1
    attempts = sum(len(fact.get("attempts", [])) for fact in latest.values())
    backends = sorted({s.get("backend", "?") for s in sessions})
    parts = [f"{count} {html.escape(str(outcome))}" for outcome, count in sorted(outcomes.items(), key=lambda item: str(item[0]))]
    return (f"<section><p>Run <b>{html.escape(run_name)}</b> on the {html.escape(', '.join(backends) or '?')} backend, "
            f"{len(sessions)} session{'s' if len(sessions) != 1 else ''} since {_clock(origin)}: "
            f"{len(latest)} tasks ended ({', '.join(parts) or 'none'}) in {attempts} attempts.</p></section>")


def _failures(run_name: str, latest: dict) -> str:
    failed = sorted((fact for fact in latest.values() if fact.get("outcome") != "succeeded"), key=lambda fact: fact["index"])
    if not failed:
        return "<section><h2>Failures</h2><p>None.</p></section>"
    rows = "".join(
        f"<tr><td>{fact['index']}</td><td>{html.escape(str(fact.get('exit_code')))}</td><td>{html.escape(fact.get('failure_info') or '')}</td>"
        f"<td><pre>{html.escape(fact.get('stderr_tail') or '(empty)')}</pre></td></tr>" for fact in failed[:FAILURES_SHOWN])
    more = f"<p>... and {len(failed) - FAILURES_SHOWN} more: runs/{html.escape(run_name)}/logs/ has every stderr.</p>" if len(failed) > FAILURES_SHOWN else ""
    return (f"<section><h2>Failures ({len(failed)})</h2><table class='failures'><tr><th>task</th><th>exit code</th><th>what happened</th>"
            f"<th>last lines of its stderr</th></tr>{rows}</table>{more}</section>")


def _section(title: str, caption: str, figure_id: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2><p>{html.escape(caption)}</p><div id='{figure_id}' class='figure'></div></section>"


STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
pre{margin:0;white-space:pre-wrap;max-height:12em;overflow:auto}h2{margin-top:1.6em}"""

# Unpacks plotly.js (no network: the bytes are in the page), then draws each figure.
LOADER = """(async function () {
  const packed = atob(document.getElementById("plotly-js").textContent.trim());
  const bytes = Uint8Array.from(packed, (c) => c.charCodeAt(0));
  const source = await new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"))).text();
  (0, eval)(source);
  const figures = JSON.parse(document.getElementById("figures").textContent);
  for (const [id, figure] of Object.entries(figures)) {
    await Plotly.newPlot(id, figure.data, figure.layout, {displaylogo: false, responsive: true});
  }
  document.body.dataset.drawn = "yes";
})().catch((error) => { console.error("the report could not be drawn:", error); });"""


def _page(run_name: str, sections: list, figures: dict) -> str:
    data = {name: json.loads(figure.to_json()) for name, figure in figures.items()}
    # "<" escaped so that no string in the data can end the script element
    payload = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>superbatch run {html.escape(run_name)}</title>"
            f"<style>{STYLE}</style></head><body><h1>Run {html.escape(run_name)}</h1>{''.join(sections)}"
            f"<script type='application/json' id='figures'>{payload}</script>"
            f"<script type='application/octet-stream' id='plotly-js'>{_packed_plotly()}</script>"
            f"<script>{LOADER}</script></body></html>")


@functools.lru_cache(maxsize=1)
def _packed_plotly() -> str:
    """plotly.js from the plotly package, gzipped and in base64 (4.8 MB -> about 2 MB)."""
    from plotly.offline import get_plotlyjs

    return base64.b64encode(gzip.compress(get_plotlyjs().encode(), compresslevel=9, mtime=0)).decode()


def _clock(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _natural(name: str):
    """slot 2 before slot 10."""
    import re

    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


if __name__ == "__main__":  # the flow writes the report in a process of its own: python -m superbatch.report RUN_DIR
    import sys

    print(write_report(Path(sys.argv[1])))
