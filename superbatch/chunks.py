"""How many iterations each task carries (--chunk N, or --chunk auto).

A chunk is several iterations in one task's working directory (the worker's
docstring and the README say what its files hold). Auto starts with a wave
of one-iteration chunks, measures them, then sizes each next chunk to last
about `target` seconds: long enough that the task's fixed cost is small,
never so large that too few chunks are left to keep every slot busy to the
end (the sizes shrink as the run's tail nears).
"""

import os
import shutil
from typing import Optional, Union

from .errors import UsageError

AUTO = "auto"


def chunk_setting(text: str) -> Union[int, str]:
    """--chunk's value: a positive number of iterations, or auto."""
    if text == AUTO:
        return AUTO
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(text)
    return value


class ChunkSizer:
    """The size of each next chunk, from the setting and the durations measured so far."""

    def __init__(self, setting: Union[int, str], slots: int, target: float, tail_chunks_per_slot: int = 2):
        self.fixed: Optional[int] = None if setting == AUTO else int(setting)
        self.slots = max(1, slots)
        self.target = target
        self.tail = tail_chunks_per_slot
        self.iterations = 0
        self.seconds = 0.0

    def observe(self, seconds: float) -> None:
        """One iteration ran for this long."""
        self.iterations += 1
        self.seconds += max(0.0, seconds)

    def next(self, remaining: int) -> int:
        if self.fixed:
            return min(self.fixed, remaining)
        if not self.iterations:
            return min(1, remaining)  # the first wave: measured before anything is sized
        mean = max(self.seconds / self.iterations, 1e-6)
        size = int(self.target / mean)
        busy = remaining // (self.slots * self.tail)  # enough chunks left to keep every slot busy
        return max(1, min(size, busy, remaining))


def refuse_unless_one(backend: str, setting) -> None:
    """For a backend that sends one iteration per task so far."""
    if setting not in (None, 1):
        raise UsageError(f"--chunk {setting}: the {backend} backend runs one iteration per task so far; leave --chunk out or give --chunk 1")


def harvest(run, keep: bool = True) -> int:
    """Bring home the results a killed run left in its chunks' working
    directories (runs/<run>/work/chunk_*/), then remove those directories;
    keep=False (the inputs were restaged) only removes them. Returns how many came home."""
    count = 0
    for workdir in sorted(run.work_dir.glob("chunk_*")) if run.work_dir.exists() else []:
        for output in workdir.glob(run.files.local_output.format("*")) if keep else []:
            if not (run.path / output.name).exists():
                os.replace(output, run.path / output.name)
                count += 1
        shutil.rmtree(workdir, ignore_errors=True)
    return count
