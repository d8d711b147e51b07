"""Chunk tasks on Azure Batch (--chunk N|auto): several iterations per Batch task.

A chunk task's id is <run>-c<n>; the journal keeps the iterations of each
chunk of the current job, as ranges, under "chunks". Its files live in the
blob folder <prefix>chunks/<task id>/: resource.pickle (.json), uploaded by
the controller as it adds the task, then what the worker uploads as it goes
(worker.py): zip archives of finished iterations' files (task_<i>_output.pickle
per result, task_<i>_error.txt per failure), part-<first>-<end>.zip by the
positions in the chunk they cover, at least one a second; and status.json
last. When the task ends the controller reads status.json, one blob for the
whole chunk, and each part is downloaded once, when the first of its
results is fetched, its files unpacked into the run folder. A chunk that
failed as a whole (task.py does not import, retries used up) has no status,
and then the parts in its folder tell which iterations had finished.

--chunk auto: a first wave of one chunk per slot of the pool, together
holding every iteration, each told to start no iteration after
chunks.FIRST_WAVE_SECONDS of work. A run that fits is done then; the
iterations a first-wave chunk left are sent again in chunks sized from the
times it reported (chunks.batch_sizes). The measured time is journaled, so a
resumed run sizes without a new first wave.
"""

from __future__ import annotations

import io
import json
import os
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from constants import CHUNK_STATUS_FILE

from ...chunks import AUTO, FIRST_WAVE_SECONDS, batch_sizes, chunk_resource
from ...redact import redact
from ..base import TaskEnd, span, tail
from .ranges import add_range, expand, from_sorted

ADD_AT_ONCE = 100  # chunk tasks per add request, the service's limit


def is_chunk_id(task_id: str) -> bool:
    last = task_id.rsplit("-", 1)[-1]
    return last.startswith("c") and last[1:].isdigit()


def split(indices: list, sizes: list) -> list:
    groups, start = [], 0
    for size in sizes:
        groups.append(indices[start:start + size])
        start += size
    return groups


class ChunkTasks:
    """The chunk tasks of the backend's current job: adding them, and reading how their iterations ended."""

    def __init__(self, backend, setting):
        self.backend = backend
        self.setting = setting  # a number of iterations per chunk, or AUTO
        self.result_blob: dict = {}  # index -> the blob of its result, until fetched
        self.unsized: list = []  # auto: iterations a first-wave chunk left, to send again once sized
        self.first_wave: set = set()  # task ids of the first wave still running
        self.first_wave_times: list = []  # wall seconds of first-wave tasks that reported no iteration time
        self.unpacked: set = set()  # parts whose files are in the run folder
        self.ended: set = set()  # chunk tasks whose end has been read
        self.errors: dict = {}  # index -> the traceback a part held for it
        self.lock = threading.Lock()  # guards part_locks: fetch threads unpack parts, each part once
        self.part_locks: dict = {}

    @property
    def state(self) -> dict:
        return self.backend.state

    def folder(self, task_id: str) -> str:
        return f"{self.backend.prefix}chunks/{task_id}/"

    def members(self, task_id: str) -> Optional[list]:
        ranges = self.state.get("chunks", {}).get(task_id)
        return expand(ranges) if ranges is not None else None

    def slots(self) -> int:
        settings = self.backend.settings
        return max(1, (settings.dedicated_nodes + settings.spot_nodes) * settings.task_slots)

    # --- adding ---------------------------------------------------------------------

    def send(self, indices: list) -> None:
        """Add chunk tasks for these iterations, in chunks of --chunk, or as auto decides."""
        if not indices:
            return
        if self.setting != AUTO:
            size = int(self.setting)
            self.add([indices[start:start + size] for start in range(0, len(indices), size)])
            return
        seconds = self.state.get("iteration_seconds")
        if seconds is None:  # the first wave: every iteration, one chunk per slot, time-boxed
            self.first_wave = set(self.add(split(indices, batch_sizes(len(indices), self.slots(), 0.0)), FIRST_WAVE_SECONDS))
            return
        sizes = batch_sizes(len(indices), self.slots(), seconds)
        self.backend._say(f"chunks of {sizes[0]} iterations (about {seconds:.3g}s each, {self.slots()} slots)")
        self.add(split(indices, sizes))

    def size_the_rest(self) -> None:
        """Auto: once the first wave has told an iteration's time (or has
        ended without telling it), add the iterations still unsent."""
        if not self.unsized:
            return
        if self.state.get("iteration_seconds") is None:
            if self.first_wave:
                return
            # Every first-wave chunk failed as a whole: its tasks' wall time is the best guess there is.
            times = self.first_wave_times or [60.0]
            self.backend._save_state(iteration_seconds=sum(times) / len(times))
        rest, self.unsized = sorted(self.unsized), []
        self.send(rest)

    def add(self, groups: list, time_box: Optional[float] = None) -> list:
        """Upload each chunk's resource file and add its task; returns the task ids."""
        from . import sas
        from .digests import record
        from .tasks import chunk_task_definition

        backend, run, store = self.backend, self.backend.run, self.backend.store
        files = run.files
        sas.record(self.state, sas.expiry(backend.settings.sas_hours))
        backend._say(f"adding {len(groups)} chunk tasks ({sum(map(len, groups))} iterations) to job {backend.job_id}")
        results_url = store.results_url()
        ids = []
        for start in range(0, len(groups), ADD_AT_ONCE):
            part = groups[start:start + ADD_AT_ONCE]
            number = self.state.get("chunk_number", 0)
            named = [(f"{run.name}-c{number + offset + 1}", group) for offset, group in enumerate(part)]
            # Numbers are spent before the tasks exist: after a crash in between, a
            # rerun never gives one of these ids (and blob folders) to other iterations.
            backend._save_state(chunk_number=number + len(part))
            store.upload_data((self.folder(task_id) + files.resource, chunk_resource(run.path, group, files))
                              for task_id, group in named)
            tasks = [chunk_task_definition(task_id, backend.settings, store.read_url(self.folder(task_id) + files.resource),
                                           results_url, self.folder(task_id), backend.options.retries, files,
                                           image=backend.task_image, time_box=time_box) for task_id, group in named]
            backend.batch.add_tasks(backend.job_id, tasks)
            # Journaled once added: a crash before leaves tasks no journal names,
            # whose iterations a rerun sends again in chunks of its own.
            chunks, added = dict(self.state.get("chunks", {})), self.state.get("added", [])
            for task_id, group in named:
                chunks[task_id] = from_sorted(sorted(group))
                for first, last in chunks[task_id]:
                    added = add_range(added, first, last)
                self.state["images"] = record(self.state.get("images", {}), backend.task_image, group)
            backend._save_state(chunks=chunks, added=added)
            ids += [task_id for task_id, _ in named]
        return ids

    # --- how a chunk's iterations ended ------------------------------------------------

    def ends(self, task, waiting: set) -> list:
        """A TaskEnd for each iteration of this completed chunk task still waited for."""
        members = self.members(task.id)
        if members is None or task.id in self.ended:
            return []  # not a task of this job's journal (added before a crash, or another run's), or seen already
        self.ended.add(task.id)  # listings overlap; what a first-wave chunk left must be sent once
        members = [index for index in members if index in waiting]
        self.first_wave.discard(task.id)
        if not members:
            return []
        info = task.execution_info
        folder = self.folder(task.id)
        store = self.backend.store
        status = store.read(folder + CHUNK_STATUS_FILE) if info is not None and info.result == "success" else None
        ends = self._from_status(json.loads(status), members, folder, task) if status is not None else self._from_listing(members, folder, task)
        self._unpack_parts({self.result_blob[end.index] for end in ends if end.index in self.result_blob})
        for end in ends:
            if end.index in self.result_blob and self.backend.run.is_home(end.index):
                del self.result_blob[end.index]
        return ends

    def _unpack_parts(self, parts: set) -> None:
        """Bring a finished chunk's results home now, its parts downloaded side
        by side: the flow then finds them home and queues no fetch per result
        (100,000 queued fetches held ~250 MB). A part that cannot be had is
        left to the flow's fetch, which retries it and reports its failure."""
        if not parts:
            return
        with ThreadPoolExecutor(min(8, len(parts)), thread_name_prefix="parts") as pool:
            for future in [pool.submit(self.unpack, part) for part in parts]:
                try:
                    future.result()
                except Exception:
                    pass

    def _from_status(self, status: dict, members: list, folder: str, task) -> list:
        iterations = status.get("iterations", {})
        where = status.get("node") or (task.node_info.node_id if task.node_info else "") or "node unknown"
        ends, times = [], []
        for index in members:
            entry = iterations.get(str(index))
            if entry is None:  # a first-wave chunk's time ran out before it: sent again, sized
                self.unsized.append(index)
                continue
            part = folder + entry["part"] if entry.get("part") else None
            tries = entry.get("tries") or []  # none for what a preempted attempt had finished
            if tries:
                times.append(tries[-1][1] - tries[-1][0])
            if entry.get("earlier") and part:  # its outcome is in the part only
                self.unpack(part)
                succeeded = self.backend.run.is_home(index)
            else:
                succeeded = bool(entry.get("ok")) and part is not None
            outcome = "succeeded" if succeeded else "failed"
            spans = [span(start, end, where, "retried") for start, end in tries[:-1]]
            spans += [span(start, end, where, outcome) for start, end in tries[-1:]]
            if succeeded:
                ends.append(self._succeeded(index, part, spans, max(1, len(tries))))
            else:
                ends.append(self._failed(index, part, spans, max(1, len(tries)), None))
        if times and self.state.get("iteration_seconds") is None:
            self.backend._save_state(iteration_seconds=sum(times) / len(times))
        return ends

    def _from_listing(self, members: list, folder: str, task) -> list:
        """The chunk failed as a whole: the iterations its parts hold stand, the rest failed with it."""
        from .batch import failure_text, task_spans

        info = task.execution_info
        if info is not None and info.start_time and info.end_time:
            self.first_wave_times.append((info.end_time - info.start_time).total_seconds())
        for name in self.backend.store.names(folder):
            if name.startswith("part-") and name.endswith(".zip"):
                self.unpack(folder + name)
        chunk_failure = (redact(self.backend.batch.stderr_tail(self.backend.job_id, task.id)), redact(failure_text(info)))
        spans = task_spans(task)
        ends = []
        for index in members:
            if self.backend.run.is_home(index):
                ends.append(TaskEnd(index, True, 0, spans=[]))
            else:
                ends.append(self._failed(index, None, spans, (info.retry_count + 1) if info else 1,
                                         None if index in self.errors else chunk_failure,
                                         exit_code=info.exit_code if info else None))
        return ends

    def _succeeded(self, index: int, part: str, spans: list, attempts: int) -> TaskEnd:
        self.result_blob[index] = part
        return TaskEnd(index, True, 0, attempts=attempts, spans=spans)

    def _failed(self, index: int, part: Optional[str], spans: list, attempts: int, chunk_failure: Optional[tuple],
                exit_code: Optional[int] = 1) -> TaskEnd:
        """chunk_failure: (stderr, Batch's account) of a chunk that failed as a whole;
        None when the iteration raised, its traceback in a part."""
        if chunk_failure is None:
            if part:
                self.unpack(part)
            stderr, account = redact(self.errors.pop(index, "")), ""  # its traceback says it all
        else:
            stderr, account = chunk_failure
        log = self.backend.run.log_path(index)
        log.parent.mkdir(exist_ok=True)
        log.write_text(stderr)
        return TaskEnd(index, False, exit_code, stderr_tail=tail(stderr), failure_info=account, attempts=attempts, spans=spans)

    # --- bringing results home --------------------------------------------------------

    def fetch(self, index: int) -> None:
        """Bring one iteration's result home: unpack its part, once (ends() did, unless it failed)."""
        part = self.result_blob.pop(index, None)
        if part is not None:
            self.unpack(part)
        if not self.backend.run.is_home(index):
            raise FileNotFoundError(f"the chunk's files hold no result for it ({part or 'no part'})")

    def unpack(self, part: str) -> None:
        """Download a part and put its files where they belong: results in
        the run folder (each whole or not at all), tracebacks aside."""
        with self.lock:
            part_lock = self.part_locks.setdefault(part, threading.Lock())
        with part_lock:
            if part in self.unpacked:
                return
            data = self.backend.store.read(part)
            if data is None:
                raise FileNotFoundError(f"{part} is not in the run's container")
            run = self.backend.run
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for name in archive.namelist():
                    if name.endswith(".txt"):  # CHUNK_ERROR_PATTERN
                        self.errors[int(name.split("_")[1])] = archive.read(name).decode(errors="replace")
                        continue
                    destination = run.path / os.path.basename(name)
                    if not destination.exists():
                        partial = destination.with_name(destination.name + ".partial")
                        partial.write_bytes(archive.read(name))
                        os.replace(partial, destination)
            self.unpacked.add(part)
        with self.lock:
            self.part_locks.pop(part, None)
