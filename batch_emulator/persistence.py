"""Keeping an emulated account across restarts (``state_file=``).

The account's pools, jobs and tasks (states, times, execution info) are
written as JSON to the state file, atomically (a temporary file renamed over
it):

- before the answer to every request that can change something leaves
  (POST, PUT, PATCH, DELETE), so a client that got an answer can rely on it;
- whenever something changed since the last write (node threads complete
  tasks between requests), checked a few times a second;
- once more when the emulator stops.

On start the file is read back. What lived only in memory comes back as
after a restart of every node: nodes are allocated again, and tasks that
were ``preparing`` or ``running`` go back to ``active`` (requeued, as a node
reboot does: requeueCount up) to run again. Pools and jobs that were being
deleted are gone; jobs that were terminating are completed. A run that ends
once the emulator is stopping is not recorded (models.stop_runs), so the
tasks it stopped are saved as running, never as completed.

Secrets are not written: registry passwords in pool and task specs are left
out (a restored pool pulls without them). The entities are read and rebuilt
from outside their modules, so the state modules need not know about this.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import threading
from pathlib import Path

from .state import common
from .state.jobs import _COUNT_KEYS, Job
from .state.pools import Pool
from .state.tasks import Task

FORMAT = 1
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
CHECK_EVERY = 0.25  # seconds between checks for changes made by node threads

_POOL = ("id", "seq", "spec", "state", "state_time", "alloc_state", "alloc_time", "creation", "modified",
         "target_dedicated", "target_low", "resize_errors")
_JOB = ("id", "seq", "spec", "state", "state_time", "prev_state", "prev_state_time", "creation", "modified",
        "end_time", "terminate_reason")
_TASK = ("id", "seq", "spec", "state", "state_time", "prev_state", "prev_state_time", "creation", "modified",
         "start", "end", "exit_code", "failure", "result", "retry_count", "requeue_count", "last_retry",
         "last_requeue", "node_id", "pool_id", "container_info", "slots")


def _without_passwords(value):
    if isinstance(value, dict):
        return {k: _without_passwords(v) for k, v in value.items() if k != "password"}
    if isinstance(value, list):
        return [_without_passwords(v) for v in value]
    return value


def _fields(obj, names) -> dict:
    return {name: _without_passwords(getattr(obj, name)) for name in names}


def snapshot(backend) -> dict:
    with backend.lock:
        return {
            "format": FORMAT,
            "account": backend.account,
            "pools": [_fields(p, _POOL) for p in backend.pools.values() if p.state != "deleting"],
            "jobs": [{**_fields(j, _JOB), "tasks": [
                {**_fields(t, _TASK), "task_dir": str(t.task_dir) if t.task_dir else None}
                for t in j.tasks.values()]} for j in backend.jobs.values() if j.state != "deleting"],
        }


def write(backend, path: Path) -> None:
    data = json.dumps(snapshot(backend), separators=(",", ":"))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(data)
    os.replace(tmp, path)


def load(backend, path: Path) -> None:
    """Rebuild the account saved in path (if the file exists) into a fresh backend."""
    if not path.exists():
        return
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: not an emulator state file of format {FORMAT}")
    top_seq = 0
    with backend.lock:
        for saved in data["pools"]:
            pool = Pool()
            for name in _POOL:
                setattr(pool, name, saved[name])
            pool.key = pool.id.lower()
            pool.etag = common.new_etag()
            pool.nodes, pool.node_seq, pool.alloc_pending, pool.timed_out_kinds = {}, itertools.count(1), None, []
            pool.slots = pool.spec.get("taskSlotsPerNode", 1)
            pool.fill_pack = pool.spec.get("taskSchedulingPolicy", {}).get("nodeFillType") == "pack"
            pool.dir = backend.workdir / "pools" / f"{pool.key}-{pool.seq}"
            backend.pools[pool.key] = pool
            top_seq = max(top_seq, pool.seq)
        for saved in data["jobs"]:
            job = _load_job(backend, saved)
            top_seq = max(top_seq, job.seq)
        backend._seq = itertools.count(top_seq + 1)
        for pool in backend.pools.values():
            backend._reconcile_nodes(pool, "requeue")   # fresh nodes; they schedule once booted
            backend._autoscale_restore(pool)


def _load_job(backend, saved: dict) -> Job:
    job = Job()
    for name in _JOB:
        setattr(job, name, saved[name])
    job.key = job.id.lower()
    job.etag = common.new_etag()
    if job.state == "terminating":   # its running tasks stopped with the emulator
        job.prev_state, job.prev_state_time, job.state = job.state, job.state_time, "completed"
        job.end_time = job.end_time or job.state_time
    job.tasks, job.pending, job.counts_seen = {}, collections.deque(), None
    job.counts, job.slot_counts = dict.fromkeys(_COUNT_KEYS, 0), dict.fromkeys(_COUNT_KEYS, 0)
    top = 0
    for item in sorted(saved["tasks"], key=lambda t: t["seq"]):
        task = Task()
        for name in _TASK:
            setattr(task, name, item[name])
        task.key, task.job, task.etag = task.id.lower(), job, common.new_etag()
        task.task_dir = Path(item["task_dir"]) if item["task_dir"] else None
        task.node = task.handle = None
        if task.state in ("preparing", "running"):
            # Its node is gone: back in the queue, as after a node reboot.
            us = common.now_us()
            task.prev_state, task.prev_state_time = task.state, task.state_time
            task.state, task.state_time = "active", us
            task.requeue_count += 1
            task.last_requeue = us
        bucket = "running" if task.state in ("preparing", "running") else task.state
        if bucket in job.counts:
            job.counts[bucket] += 1
            job.slot_counts[bucket] += task.slots
        if task.state == "completed":
            outcome = "succeeded" if task.result == "success" else "failed"
            job.counts[outcome] += 1
            job.slot_counts[outcome] += task.slots
        if task.state == "active":
            job.pending.append(task)
        job.tasks[task.key] = task
        top = max(top, task.seq)
    job.task_seq = itertools.count(top + 1)
    backend.jobs[job.key] = job
    return job


class StateKeeper:
    """Writes the state file when the account changes; see the module's doc."""

    def __init__(self, backend, path: str | Path):
        self.backend, self.path = backend, Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._written = None
        self._stop = threading.Event()
        load(backend, self.path)
        self.save()
        self._thread = threading.Thread(target=self._watch, name="batch-emulator-state", daemon=True)
        self._thread.start()

    def _version(self) -> str:
        return repr(common._etags)   # every change of state takes a new etag

    def save(self) -> None:
        with self._lock:
            version = self._version()
            write(self.backend, self.path)
            self._written = version

    def _watch(self) -> None:
        while not self._stop.wait(CHECK_EVERY):
            if self._version() != self._written:
                self.save()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.save()

    def wrap(self, app):
        """The ASGI app, saving before each answer to a request that may change state."""
        async def persisted(scope, receive, send):
            if scope.get("type") != "http" or scope.get("method") not in MUTATING:
                return await app(scope, receive, send)

            async def send_after_saving(message):
                if message.get("type") == "http.response.start":
                    self.save()
                await send(message)

            return await app(scope, receive, send_after_saving)

        return persisted
