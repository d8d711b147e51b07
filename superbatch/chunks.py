"""How many iterations each task carries (--chunk N, or --chunk auto).

A chunk is several iterations in one task's working directory (the worker's
docstring and the README say what its files hold). Auto starts with a wave
of one-iteration chunks, measures them, then sizes each next chunk to last
about `target` seconds: long enough that the task's fixed cost is small,
never so large that too few chunks are left to keep every slot busy to the
end (the sizes shrink as the run's tail nears).

On Azure Batch every task is added to the job up front, so auto there plans
the rest in one go once the first wave has been measured (batch_sizes):
chunks of equal size, one per slot of the pool, or more where that would
make a chunk last longer than LONGEST_BATCH_CHUNK.
"""

import math
import os
import shutil
from pathlib import Path
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


# --chunk auto on Azure Batch: the first wave is one chunk per slot holding
# every iteration, each stopped after this many seconds of work (the worker's
# SUPERBATCH_TIME_BOX); a run whose work fits is done in one task per slot,
# and the rest of a longer one is sized from the iterations timed. The
# variable of the same name changes it (tests use a second or two).
FIRST_WAVE_SECONDS = float(os.environ.get("SUPERBATCH_FIRST_WAVE_SECONDS", "60"))

# About how long a chunk on Azure Batch may last at most: long enough that a
# task's fixed cost (scheduling, container start: seconds) is a small part of
# it, short enough that progress shows and slots even out near the end.
LONGEST_BATCH_CHUNK = 20 * 60


def batch_sizes(count: int, slots: int, seconds: float, longest: float = LONGEST_BATCH_CHUNK) -> list:
    """The sizes of the chunks that carry `count` iterations of about
    `seconds` each on a pool of `slots` task slots: as few chunks as keep
    every slot busy to the end (one per slot), more when a chunk would
    otherwise last over `longest` seconds; never more than one per iteration."""
    if count <= 0:
        return []
    per_slot = count * max(seconds, 0.0) / max(1, slots)
    waves = max(1, math.ceil(per_slot / longest))
    chunks = max(1, min(count, max(1, slots) * waves))
    size, extra = divmod(count, chunks)
    return [size + 1] * extra + [size] * (chunks - extra)


def chunk_resource(run_dir: Path, indices: list, files) -> bytes:
    """A chunk's resource file: {CHUNK_KEY: [[index, parameters], ...]} in the run's format."""
    from constants import CHUNK_KEY

    from . import formats

    chunk = [[index, formats.load(run_dir / files.local_resource.format(index), files.format)] for index in indices]
    return formats.encode({CHUNK_KEY: chunk}, files.format, "a chunk's parameters")


def resolve(setting, other_worker: bool, task_timeout) -> Union[int, str]:
    """The iterations per task a backend uses: --chunk, else auto; one where a
    task must be one iteration (a worker other than worker.py runs a task's
    files as they are; --task-timeout limits a task). An explicit --chunk
    that cannot be honoured is one line, not a silent change."""
    if setting not in (None, 1) and other_worker:
        raise UsageError(f"--chunk {setting}: a chunk is run by worker.py; with another worker (task.py's WORKER or --task-command) give --chunk 1")
    if setting not in (None, 1) and task_timeout:
        raise UsageError(f"--chunk {setting}: --task-timeout limits each task and here a task is one iteration; leave --chunk out or give --chunk 1")
    if setting is None:
        return 1 if other_worker or task_timeout else AUTO
    return setting


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
