"""The one flow every backend follows: stage, submit, follow, collect, aggregate."""

import argparse
import json
import os
import queue
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from .backends import Backend, TaskEnd, backend_class
from .chunks import harvest
from .errors import SuperbatchError
from .facts import FactLog, iter_facts
from .formats import load
from .progress import Progress, say
from .redact import redact
from .runs import RunFolder
from .staging import Stager, choose_format
from .taskdef import TaskDefinition, load_task_definition

FETCH_THREADS = 16  # outputs downloaded at once (azure); local outputs are already home


@dataclass
class Failure:
    index: int
    exit_code: Any
    stderr_tail: str
    failure_info: str = ""
    timed_out: bool = False  # stopped by --task-timeout


@dataclass
class Summary:
    run: str
    backend: str
    tasks: dict = field(default_factory=dict)  # counts by outcome
    phases: dict = field(default_factory=dict)  # wall seconds by phase
    failures: list = field(default_factory=list)
    aggregate: Any = None
    # Each task that ended in this session, as runs/<run>/facts.jsonl has it: read
    # from that file when the summary is written, not held (20,000 of them weigh ~30 MB).
    facts_file: Optional[Path] = None
    session: int = 0
    nodes: list = field(default_factory=list)  # the pool's node counts over time (azure)
    images: dict = field(default_factory=dict)  # image by digest -> task indices, where the backend knows
    cost: Any = None  # node-hours, task-hours, price... (azure backend, cost.py)
    fallback: Any = None  # spot nodes gave way to dedicated ones, and why (azure backend, elastic.py)

    def write(self, path: Path) -> None:
        data = asdict(self)
        facts_file, session = data.pop("facts_file"), data.pop("session")
        try:
            json.dumps(data["aggregate"])
        except (TypeError, ValueError):
            data["aggregate"] = repr(data["aggregate"])
        # The facts go last, one line each as they are read: 100,000 of them
        # as one JSON text would hold hundreds of MB at once.
        head = json.dumps(data, indent=2)
        with open(path, "w", encoding="utf-8") as out:
            out.write(head[:-2] + ',\n  "facts": [')
            separator = "\n    "
            for fact in iter_facts(facts_file.parent) if facts_file else []:
                if fact.get("kind") == "task" and fact.get("session") == session:
                    out.write(separator + json.dumps(fact))
                    separator = ",\n    "
            out.write("\n  ]\n}\n")


class TaskFailures(SuperbatchError):
    """Some tasks failed and --allow-failures was not given."""

    def __init__(self, summary: Summary, total: int):
        self.summary = summary
        summary.failures.sort(key=lambda failure: failure.index)
        count = len(summary.failures)
        first = summary.failures[0]
        how = first.failure_info if first.timed_out else f"exit code {first.exit_code}"
        lines = [
            f"{count} of {total} tasks failed (first: task {first.index}, {how}); "
            f"fix task.py and rerun with --run {summary.run} to run only those, or add --allow-failures to aggregate the rest"
        ]
        for failure in summary.failures[:5]:
            if failure.timed_out:  # failure_info words it: "timed out after 2s (--task-timeout)"
                lines.append(f"  task {failure.index} {failure.failure_info}; last lines of its stderr:")
            else:
                lines.append(f"  task {failure.index} exited with code {failure.exit_code}" + (f" ({failure.failure_info})" if failure.failure_info else "") + "; last lines of its stderr:")
            lines.extend("    " + line for line in (failure.stderr_tail or "(empty)").splitlines())
        if count > 5:
            lines.append(f"  ... and {count - 5} more; see the summary (--summary-json) and runs/{summary.run}/logs/")
        super().__init__("\n".join(lines))


@contextmanager
def timed(phases: dict, name: str):
    started = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = round(phases.get(name, 0.0) + time.perf_counter() - started, 4)


def run_job(options: argparse.Namespace, kit_dir: Path, runs_dir: Path) -> Optional[Summary]:
    """Run every task of kit_dir/task.py on the chosen backend; return the summary
    (None when the run was only cancelled)."""
    summary = Summary(run=options.run, backend=options.backend)
    phases = summary.phases
    with timed(phases, "load"):
        definition = load_task_definition(kit_dir)
        run = RunFolder(runs_dir, options.run)
        choose_format(run, getattr(options, "format", None) or definition.format)
        options.worker = definition.worker  # the backends' command when task.py names its own worker
        backend: Backend = backend_class(options.backend)(run, options, kit_dir)
        backend.check()  # every setting validated before anything is staged or created
    if getattr(options, "cancel", False):
        backend.cancel()
        return None
    with timed(phases, "stage"):  # local only; before the image, so that task 0 can run in it
        stager = Stager(run, restage=options.restage, max_input_bytes=int(options.max_input_mb * 2**20))
        total = stager.stage(definition)
        harvest(run, keep=not stager.restaged)  # results a killed run's chunks finished (none if the inputs changed)
    if options.build or options.push or getattr(options, "preflight", False):
        _image_phase(options, kit_dir, run, backend, phases)
    pending = [index for index in range(total) if not run.is_home(index)]
    summary.tasks = {"total": total, "already_done": total - len(pending), "succeeded": 0, "failed": 0}

    progress = Progress(total, total - len(pending), quiet=options.quiet)
    facts = FactLog(run.path, options.backend)
    summary.facts_file, summary.session = facts.path, facts.session
    try:
        with timed(phases, "run"):
            if pending:
                _run_tasks(backend, run, pending, summary, progress, facts)
    except KeyboardInterrupt:
        progress.close()
        backend.interrupted()
        raise
    else:
        progress.close()
    finally:
        backend.close()
        phases.update(backend.phases)
        summary.nodes = backend.node_samples
        facts.nodes(backend.node_samples)
        summary.images = backend.images()
        summary.cost, summary.fallback = getattr(backend, "cost", None), getattr(backend, "fallback", None)
        facts.cost(summary.cost)

    if summary.failures and not options.allow_failures:
        _report(run, facts, phases, options.quiet)
        raise TaskFailures(summary, total)
    with timed(phases, "aggregate"):
        summary.aggregate = _aggregate(definition, run, total)
    _report(run, facts, phases, options.quiet)
    return summary


def _report(run: RunFolder, facts: FactLog, phases: dict, quiet: bool) -> None:
    """Close the session's facts and write runs/<run>/report.html; a report that
    cannot be written is a warning, never the run's failure."""
    facts.phases(phases)
    facts.close()
    # In a process of its own: drawing 20,000 tasks takes ~70 MB that the
    # controller need not hold (its peak memory stays flat with the task count).
    package_root = str(Path(__file__).resolve().parent.parent)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "superbatch.report", str(run.path)], capture_output=True, text=True, env=environment)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
        print(f"warning: the run report could not be written ({reason}); try again with --report --run {run.name}", file=sys.stderr)
        return
    say(f"report: {done.stdout.strip()}", quiet)


def _image_phase(options, kit_dir: Path, run: RunFolder, backend: Backend, phases: dict) -> None:
    """Build, try task 0 in the image, push: in that order, so that an image
    whose task fails is never pushed nor run in the cloud."""
    from . import image  # the docker SDK, only when asked for
    from .preflight import preflight, wanted

    with timed(phases, "image"):
        if options.build:
            image.build(kit_dir, options.image, base_image=options.base_image, quiet=options.quiet)
    if wanted(options):
        with timed(phases, "preflight"):
            preflight(run, options, kit_dir, options.image)
    if options.push:
        with timed(phases, "image"):
            _, digest = image.push_image(options.image, quiet=options.quiet)
        if digest:
            backend.image_pushed(digest)


def _run_tasks(backend: Backend, run: RunFolder, pending: list, summary: Summary, progress: Progress, facts: FactLog) -> None:
    """Submit the pending tasks, follow them and bring each output home as it ends."""
    fetched: queue.SimpleQueue = queue.SimpleQueue()  # (the task's end, error or None) from the fetch threads
    in_flight = 0

    def fetch(end: TaskEnd) -> None:
        try:
            backend.fetch(end.index, run.output_path(end.index))
            fetched.put((end, None))
        except Exception as error:  # reported as that task's failure below
            fetched.put((end, error))

    def settle(block: bool) -> None:
        nonlocal in_flight
        while in_flight:
            try:
                end, error = fetched.get(block=block)
            except queue.Empty:
                return
            in_flight -= 1
            if error is None:
                _record(summary, progress, facts, end)
            else:
                # the storage SDK's message may quote the service's answer, secrets included
                _record(summary, progress, facts, TaskEnd(end.index, False, None, failure_info=redact(f"its output could not be fetched: {error}"),
                                                          attempts=end.attempts, spans=end.spans, requeues=end.requeues))

    backend.submit(pending)
    with ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="fetch") as fetchers:
        for end in backend.follow():
            if end is None:
                progress.refresh(backend.states())
            elif not end.succeeded:
                _record(summary, progress, facts, end)
            elif run.is_home(end.index):
                _record(summary, progress, facts, end)  # never fetched twice
            else:
                in_flight += 1
                fetchers.submit(fetch, end)
            settle(block=False)
        settle(block=True)


def _record(summary: Summary, progress: Progress, facts: FactLog, end: TaskEnd) -> None:
    facts.task(end)
    if end.succeeded:
        summary.tasks["succeeded"] += 1
    else:
        summary.tasks["failed"] += 1
        summary.failures.append(Failure(end.index, end.exit_code, end.stderr_tail, end.failure_info, end.timed_out))
    progress.task_ended(end.succeeded)


def _aggregate(definition: TaskDefinition, run: RunFolder, total: int) -> Any:
    results = [_load_output(run, index) for index in range(total) if run.is_home(index)]
    try:
        return definition.aggregate(results)
    except Exception as error:
        raise SuperbatchError(
            f"task.py: aggregate() raised {type(error).__name__}: {error}; the task results are kept in runs/{run.name}/, rerun with --run {run.name} to aggregate again"
        ) from error


def _load_output(run: RunFolder, index: int) -> Any:
    try:
        return load(run.output_path(index), run.format)
    except Exception as error:
        raise SuperbatchError(
            f"runs/{run.name}/{run.output_path(index).name} is unreadable ({type(error).__name__}); "
            f"delete it and rerun with --run {run.name} to run task {index} again"
        ) from None
