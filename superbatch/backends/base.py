"""The interface every backend implements.

The controller owns the flow (stage, submit, follow, collect, aggregate); a
backend only knows how to start tasks, report their ends and bring an output
file home. Nothing above this interface asks which backend is in use.
"""

import argparse
import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

from ..errors import UsageError
from ..runs import RunFolder
from ..taskdef import worker_command


@dataclass
class TaskEnd:
    """How one task ended, after the retries it was allowed."""

    index: int
    succeeded: bool
    exit_code: Optional[int] = None
    stderr_tail: str = ""
    failure_info: str = ""  # the backend's own account of a failure, if it gives one
    attempts: int = 1
    timed_out: bool = False  # stopped by --task-timeout
    # For the run report: each attempt as span(), where the backend knows it,
    # and how often the service put the task back in its queue (Azure's requeueCount).
    spans: list = field(default_factory=list)
    requeues: int = 0

    @property
    def outcome(self) -> str:
        return "succeeded" if self.succeeded else ("timed out" if self.timed_out else "failed")


def span(start: Optional[float], end: Optional[float], where: str, outcome: str) -> dict:
    """One attempt of a task: start and end in seconds since the epoch (None
    when unknown), where it ran (a node, a worker process, a container slot)
    and how it ended (succeeded, failed, timed out, retried, requeued)."""
    return {"start": start, "end": end, "where": where, "outcome": outcome}


@dataclass
class TaskStates:
    """Counts of the submitted tasks that have not ended, for the progress bar."""

    pending: int = 0
    running: int = 0
    waiting_for: str = ""  # what pending tasks wait for, e.g. "waiting for nodes: 0 of 2 dedicated, allocating, 3m12s"
    unit: str = "tasks"  # what the two counts count: "chunk tasks" where a task carries several iterations


class Backend(ABC):
    name: str = ""

    def __init__(self, run: RunFolder, options: argparse.Namespace, kit_dir: Path):
        self.run = run
        self.options = options
        self.kit_dir = Path(kit_dir)
        self.phases: dict = {}  # wall seconds of the backend's own phases (uploads, submission), for the summary
        self.node_samples: list = []  # the pool's node counts over time, where there is a pool: {"t", "dedicated", "spot"}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add this backend's own flags (in their own group)."""

    def check(self) -> None:
        """Validate settings and reachability before anything is staged or created."""

    def task_command(self, home: str) -> Optional[list]:
        """The command each task runs, when it is not worker.py: --task-command,
        else task.py's WORKER with its kit files under `home` (the kit's folder
        on this machine, /app in the image); None for worker.py."""
        command = getattr(self.options, "task_command", None)
        if command is not None:
            return shlex.split(command)
        worker = getattr(self.options, "worker", None)
        return worker_command(worker, self.kit_dir, home) if worker else None

    @abstractmethod
    def submit(self, indices: Sequence[int]) -> None:
        """Start the given tasks; their inputs are staged in the run folder."""

    @abstractmethod
    def follow(self) -> Iterator[Optional[TaskEnd]]:
        """Yield each submitted task once, as it ends, after its retries.

        May yield None now and then while nothing ends, so that the caller can
        refresh its progress display.
        """

    @abstractmethod
    def fetch(self, index: int, destination: Path) -> None:
        """Bring a succeeded task's output to `destination`, atomically.

        Called from several threads at once. A backend whose tasks already
        leave their outputs at their destination has nothing to do here.
        """

    def cancel(self) -> None:
        """Stop the run's remote work (--cancel)."""
        raise UsageError(f"--cancel stops a run's job on Azure Batch; the {self.name} backend leaves nothing running")

    def states(self) -> Optional[TaskStates]:
        """Pending and running counts, where the backend knows them."""
        return None

    def image_pushed(self, reference: str) -> None:
        """The image was just pushed; `reference` names it by digest (repo@sha256:...)."""

    def images(self) -> dict:
        """Image reference -> the indices of the tasks that ran (or were last sent) with it."""
        return {}

    def close(self) -> None:
        """Release what the backend holds (pools, clients); called once, always."""

    def interrupted(self) -> None:
        """Called on Ctrl-C before close(): say what is left running, if anything."""


def timed_out_text(seconds: float) -> str:
    """How every backend words a task stopped by --task-timeout."""
    return f"timed out after {format_duration(seconds)} (--task-timeout)"


def format_duration(seconds: float) -> str:
    """90 -> 90s, 900 -> 15m, 7200 -> 2h: the units --task-timeout takes."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def tail(text: str, lines: int = 20) -> str:
    """The last lines of a log, for failure reports."""
    return "\n".join(text.rstrip().splitlines()[-lines:])
