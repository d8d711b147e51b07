"""Progress of the tasks on stderr: a tqdm bar on a terminal, plain lines elsewhere.

Logs and CI consoles get a line every `interval` seconds (and a last one at
the end) instead of a bar's carriage returns.
"""

import sys
import time
from typing import Optional

from tqdm import tqdm

from .backends.base import TaskStates


class Progress:
    def __init__(self, total: int, already_done: int, quiet: bool = False, interval: float = 10.0, stream=None):
        self.total = total
        self.done = already_done  # outputs home from an earlier attempt of this run
        self.failed = 0
        self.states: Optional[TaskStates] = None
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.interval = interval
        self.started = time.monotonic()
        self.ended_now = 0  # tasks that ended in this attempt, for the rate
        self.last_line = 0.0
        self.bar = None
        if not quiet and self.stream.isatty():
            self.bar = tqdm(total=total, initial=already_done, file=self.stream, unit="task", dynamic_ncols=True)
            self._describe()

    def task_ended(self, succeeded: bool) -> None:
        self.ended_now += 1
        if succeeded:
            self.done += 1
        else:
            self.failed += 1
        if self.bar is not None:
            self._describe()
            self.bar.update(1)
        else:
            self._maybe_print()

    def refresh(self, states: Optional[TaskStates] = None) -> None:
        """Called between task ends (e.g. after each poll of Azure Batch)."""
        if states is not None:
            self.states = states
        if self.bar is not None:
            self._describe()
            self.bar.refresh()
        else:
            self._maybe_print()

    def close(self) -> None:
        if self.done + self.failed >= self.total:
            self.states = None  # nothing is pending or running any more, whatever the last poll said
        if self.bar is not None:
            self._describe()
            self.bar.close()
        elif not self.quiet:
            self._print()

    # ---------------------------------------------------------------------

    def _describe(self) -> None:
        parts = []
        if self.states is not None and self.states.waiting_for:
            parts.append(self.states.waiting_for)
        elif self.states is not None:
            parts.append(self._counts())
        parts.append(f"failed {self.failed}")
        self.bar.set_postfix_str(", ".join(parts), refresh=False)

    def _counts(self) -> str:
        """Running and pending tasks; named when they are chunk tasks, which done/total does not count."""
        counts = f"{self.states.running} running, {self.states.pending} pending"
        return counts if self.states.unit == "tasks" else f"{self.states.unit}: {counts}"

    def _maybe_print(self) -> None:
        if not self.quiet and time.monotonic() - self.last_line >= self.interval:
            self._print()

    def _print(self) -> None:
        self.last_line = now = time.monotonic()
        elapsed = now - self.started
        rate = self.ended_now / elapsed if elapsed > 0 else 0.0
        ended = self.done + self.failed
        line = f"[superbatch] {self.done}/{self.total} done, {self.failed} failed"
        if self.states is not None and self.states.waiting_for:
            # Nothing runs: what the tasks wait for says more than a rate of zero.
            print(f"{line}, {self.states.pending} {self.states.unit} {self.states.waiting_for}", file=self.stream, flush=True)
            return
        if self.states is not None:
            line += ", " + self._counts()
        line += f", {rate:.1f} tasks/s"
        if rate > 0 and ended < self.total:
            line += f", about {format_seconds((self.total - ended) / rate)} left"
        line += f", {format_seconds(elapsed)} elapsed"
        print(line, file=self.stream, flush=True)


def say(text: str, quiet: bool = False) -> None:
    """One line of news on stderr, unless --quiet."""
    if not quiet:
        print(f"[superbatch] {text}", file=sys.stderr, flush=True)


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
