"""What happened in a run, for its report: runs/<run>/facts.jsonl.

One JSON object a line, appended as things happen and never rewritten, so a
resumed run adds to what its earlier sessions wrote and the report covers
every task of the run. Each line has a "kind":

    session  a controller started on the run: {"session", "backend", "started"}
    task     a task ended: {"session", "index", "outcome", "exit_code",
             "attempts" (each a backends.base.span()), "requeues",
             "failure_info", "stderr_tail"}
    nodes    the pool's node count at a moment: {"session", "t", "dedicated", "spot"}
    phases   a session's phases, wall seconds: {"session", "phases", "ended"}

A crash can leave a partial last line; reading skips it.
"""

import json
import time
from pathlib import Path
from typing import Optional

FACTS_FILE = "facts.jsonl"
STDERR_CHARS = 2000  # of a failure's stderr tail kept here: 20,000 failures must not make the report huge


class FactLog:
    """Appends one session's facts to a run's facts.jsonl."""

    def __init__(self, run_dir: Path, backend: str):
        self.path = Path(run_dir) / FACTS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.session = 1 + sum(1 for fact in read_facts(run_dir) if fact.get("kind") == "session")
        self.file = open(self.path, "a", encoding="utf-8")
        self._write({"kind": "session", "backend": backend, "started": time.time()})

    def task(self, end) -> dict:
        """Record a backends.base.TaskEnd; returns the fact (the summary carries it too)."""
        fact = {"kind": "task", "index": end.index, "outcome": end.outcome, "exit_code": end.exit_code,
                "attempts": end.spans, "requeues": end.requeues}
        if not end.succeeded:
            fact.update(failure_info=end.failure_info, stderr_tail=(end.stderr_tail or "")[-STDERR_CHARS:])
        return self._write(fact)

    def nodes(self, samples: list) -> None:
        for sample in samples:
            self._write({"kind": "nodes", **sample})

    def cost(self, cost: Optional[dict]) -> None:
        """What the session's pool cost (azure: cost.py), for the report's cost block."""
        if cost:
            self._write({"kind": "cost", **cost})

    def phases(self, phases: dict) -> None:
        self._write({"kind": "phases", "phases": dict(phases), "ended": time.time()})

    def close(self) -> None:
        self.file.close()

    def _write(self, fact: dict) -> dict:
        # A line at a time, flushed: a crash loses at most the line being written.
        fact = {"kind": fact["kind"], "session": self.session, **fact}
        self.file.write(json.dumps(fact) + "\n")
        self.file.flush()
        return fact


def read_facts(run_dir: Path) -> list:
    """Every whole line of a run's facts.jsonl, in order ([] when there is none)."""
    return list(iter_facts(run_dir))


def iter_facts(run_dir: Path):
    """The same, one at a time: a run of 100,000 iterations has as many facts."""
    path = Path(run_dir) / FACTS_FILE
    try:
        with open(path, encoding="utf-8") as file:
            for line in file:
                try:
                    fact = json.loads(line)
                except ValueError:
                    continue  # the partial last line of a crashed session
                if isinstance(fact, dict):
                    yield fact
    except FileNotFoundError:
        pass


def latest_by_task(facts: list) -> dict:
    """index -> the last task fact of that index (a task that failed, then ran again on resume)."""
    latest: dict = {}
    for fact in facts:
        if fact.get("kind") == "task":
            latest[fact["index"]] = fact
    return latest


def first_of(values) -> Optional[float]:
    values = [value for value in values if value is not None]
    return min(values) if values else None
