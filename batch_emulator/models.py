"""Service state: pools, nodes, jobs and tasks, and their state machines.

One ``BatchBackend`` holds everything behind one re-entrant lock; every
public method takes it, does a little bookkeeping and returns. Slow work
(downloads, processes, uploads) happens on the nodes' worker threads, which
take the lock only to record a state change. Times are integer microseconds
since the epoch so that what a client reads back in a ``$filter`` compares
exactly.

The task life cycle follows the service: ``active`` (queued) → ``preparing``
(assigned to a node slot) → ``running`` → ``completed``, with retries on a
non-zero exit code (back to ``active``, ``retryCount`` up) and requeues when a
node is preempted or removed (back to ``active``, ``requeueCount`` up).
"""

from __future__ import annotations

import collections
import email.utils
import heapq
import itertools
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import exceptions as exc
from . import execution, schemas
from .faults import FaultPlan

API_VERSION = "2025-06-01"
# What the service reports for limits the client left out.
UNLIMITED = "P10675199DT2H48M5.4775807S"
DEFAULT_RETENTION = "P7D"
DEFAULT_RESIZE_TIMEOUT = "PT15M"


def now_us() -> int:
    return time.time_ns() // 1000


def iso(us: int | None) -> str | None:
    if us is None:
        return None
    secs, frac = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:06d}Z"


def http_date(us: int) -> str:
    return email.utils.formatdate(us / 1e6, usegmt=True)


def duration_seconds(text: str | None) -> float | None:
    """ISO 8601 duration -> seconds (years and months taken as 365 and 30 days)."""
    m = schemas.DURATION_PATTERN.match(text or "")
    if not text or not m:
        return None
    y, mo, w, d, _, h, mi, s, _ = m.groups()
    n = lambda g: float(g[:-1]) if g else 0.0  # noqa: E731 - strip the unit letter
    return (((n(y) * 365 + n(mo) * 30 + n(w) * 7 + n(d)) * 24 + n(h)) * 60 + n(mi)) * 60 + n(s)


_etags = itertools.count(0x8DC000000000000)


def new_etag() -> str:
    return f"0x{next(_etags):X}"


class Clock:
    """One thread that runs delayed state changes (node start-up, recovery)."""

    def __init__(self):
        self._heap: list = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="batch-emulator-clock", daemon=True)
        self._thread.start()

    def after(self, delay: float, fn, *args) -> None:
        with self._cv:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), fn, args))
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
        self._thread.join(timeout=5)

    def _loop(self):
        while True:
            with self._cv:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cv.wait(timeout=(self._heap[0][0] - time.monotonic()) if self._heap else None)
                if self._stopped:
                    return
                _, _, fn, args = heapq.heappop(self._heap)
            try:
                fn(*args)
            except Exception:  # a state change on something already deleted
                pass


# --- entities -----------------------------------------------------------------------

class Pool:
    __slots__ = ("id", "key", "seq", "spec", "state", "state_time", "alloc_state", "alloc_time",
                 "creation", "modified", "etag", "nodes", "target_dedicated", "target_low",
                 "slots", "fill_pack", "node_seq", "resize_errors", "dir")

    def touch(self, us):
        self.modified, self.etag = us, new_etag()


class Node:
    __slots__ = ("id", "pool", "dedicated", "state", "state_time", "alloc_time", "boot_time",
                 "slots", "used", "runs", "total_run", "total_succeeded", "ip", "executor",
                 "removing", "dir", "index")

    @property
    def free(self) -> int:
        return self.slots - self.used

    @property
    def schedulable(self) -> bool:
        return self.state in ("idle", "running") and not self.removing


class Job:
    __slots__ = ("id", "key", "seq", "spec", "state", "state_time", "prev_state", "prev_state_time",
                 "creation", "modified", "etag", "tasks", "pending", "counts", "slot_counts",
                 "end_time", "terminate_reason", "task_seq")

    def touch(self, us):
        self.modified, self.etag = us, new_etag()

    @property
    def pool_key(self) -> str:
        return self.spec["poolInfo"]["poolId"].lower()


class Task:
    __slots__ = ("id", "key", "job", "seq", "spec", "state", "state_time", "prev_state",
                 "prev_state_time", "creation", "modified", "etag", "start", "end", "exit_code",
                 "failure", "result", "retry_count", "requeue_count", "last_retry", "last_requeue",
                 "node", "node_id", "pool_id", "task_dir", "handle", "container_info", "slots")

    def touch(self, us):
        self.modified, self.etag = us, new_etag()


class Stats:
    """Request and task counters, read through /_emulator/stats."""

    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self):
        with self._lock:
            self.requests: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
            self.faults = collections.Counter()
            self.tasks = collections.Counter()
            self.started = time.time()

    def request(self, operation: str, status: int):
        with self._lock:
            self.requests[operation][str(status)] += 1

    def fault(self, kind: str):
        with self._lock:
            self.faults[kind] += 1

    def task(self, event: str, n: int = 1):
        with self._lock:
            self.tasks[event] += n

    def snapshot(self) -> dict:
        with self._lock:
            by_op = {op: dict(sorted(c.items())) for op, c in sorted(self.requests.items())}
            by_status = collections.Counter()
            for c in self.requests.values():
                by_status.update(c)
            return {
                "requests": {
                    "total": sum(by_status.values()),
                    "byStatus": dict(sorted(by_status.items())),
                    "byOperation": by_op,
                },
                "faults": dict(self.faults),
                "tasks": dict(self.tasks),
                "since": iso(int(self.started * 1e6)),
            }


# --- field accessors for $filter ------------------------------------------------------

TASK_FIELDS = {
    "id": lambda t: t.id,
    "displayName": lambda t: t.spec.get("displayName"),
    "state": lambda t: t.state,
    "previousState": lambda t: t.prev_state,
    "stateTransitionTime": lambda t: t.state_time,
    "previousStateTransitionTime": lambda t: t.prev_state_time,
    "creationTime": lambda t: t.creation,
    "lastModified": lambda t: t.modified,
    "commandLine": lambda t: t.spec["commandLine"],
    "executionInfo/exitCode": lambda t: t.exit_code,
    "executionInfo/result": lambda t: t.result,
    "executionInfo/retryCount": lambda t: t.retry_count,
    "executionInfo/requeueCount": lambda t: t.requeue_count,
    "executionInfo/startTime": lambda t: t.start,
    "executionInfo/endTime": lambda t: t.end,
    "nodeInfo/nodeId": lambda t: t.node_id,
}
JOB_FIELDS = {
    "id": lambda j: j.id,
    "displayName": lambda j: j.spec.get("displayName"),
    "state": lambda j: j.state,
    "previousState": lambda j: j.prev_state,
    "stateTransitionTime": lambda j: j.state_time,
    "creationTime": lambda j: j.creation,
    "lastModified": lambda j: j.modified,
    "priority": lambda j: j.spec.get("priority", 0),
    "poolInfo/poolId": lambda j: j.spec["poolInfo"]["poolId"],
    "executionInfo/poolId": lambda j: j.spec["poolInfo"]["poolId"],
    "executionInfo/endTime": lambda j: j.end_time,
}
POOL_FIELDS = {
    "id": lambda p: p.id,
    "displayName": lambda p: p.spec.get("displayName"),
    "state": lambda p: p.state,
    "allocationState": lambda p: p.alloc_state,
    "vmSize": lambda p: p.spec["vmSize"],
    "stateTransitionTime": lambda p: p.state_time,
    "creationTime": lambda p: p.creation,
    "lastModified": lambda p: p.modified,
    "currentDedicatedNodes": lambda p: sum(1 for n in p.nodes.values() if n.dedicated),
    "currentLowPriorityNodes": lambda p: sum(1 for n in p.nodes.values() if not n.dedicated),
}
NODE_FIELDS = {
    "id": lambda n: n.id,
    "state": lambda n: n.state,
    "schedulingState": lambda n: "enabled",
    "isDedicated": lambda n: n.dedicated,
    "stateTransitionTime": lambda n: n.state_time,
    "allocationTime": lambda n: n.alloc_time,
    "totalTasksRun": lambda n: n.total_run,
    "runningTasksCount": lambda n: len(n.runs),
}

_COUNT_KEYS = ("active", "running", "completed", "succeeded", "failed")


def _bucket(state: str) -> str:
    return "running" if state in ("preparing", "running") else state


# --- the service ------------------------------------------------------------------------

class BatchBackend:
    def __init__(self, account: str, workdir: Path, runner: execution.Runner,
                 faults: FaultPlan | None = None, node_startup_delay: float = 0.05,
                 preempt_recovery: float | None = None):
        self.account = account
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.runner = runner
        self.faults = faults or FaultPlan()
        self.node_startup_delay = node_startup_delay
        self.preempt_recovery = preempt_recovery if preempt_recovery is not None else max(0.2, node_startup_delay)
        self.base_url = "http://127.0.0.1"
        self.lock = threading.RLock()
        self.pools: dict[str, Pool] = {}
        self.jobs: dict[str, Job] = {}
        self.stats = Stats()
        self.clock = Clock()
        self._seq = itertools.count(1)
        self._closed = False

    # -- lifecycle --

    def close(self) -> None:
        with self.lock:
            self._closed = True
            nodes = [n for p in self.pools.values() for n in p.nodes.values()]
            for node in nodes:
                for handle in list(node.runs.values()):
                    handle.cancel("shutdown")
        self.clock.stop()
        for node in nodes:
            node.executor.shutdown(wait=True, cancel_futures=True)

    # -- lookups --

    def _pool(self, pool_id: str) -> Pool:
        pool = self.pools.get(pool_id.lower())
        if pool is None:
            raise exc.PoolNotFound()
        return pool

    def _job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id.lower())
        if job is None:
            raise exc.JobNotFound()
        return job

    def _task(self, job_id: str, task_id: str) -> Task:
        task = self._job(job_id).tasks.get(task_id.lower())
        if task is None:
            raise exc.TaskNotFound()
        return task

    # -- pools -------------------------------------------------------------------------

    def create_pool(self, body) -> Pool:
        spec = schemas.validate(schemas.POOL_CREATE, body)
        us = now_us()
        with self.lock:
            key = spec["id"].lower()
            if key in self.pools:
                raise exc.PoolExists()
            pool = Pool()
            pool.id, pool.key, pool.seq, pool.spec = spec["id"], key, next(self._seq), spec
            pool.state, pool.state_time = "active", us
            pool.alloc_state, pool.alloc_time = "steady", us
            pool.creation = us
            pool.touch(us)
            pool.nodes = {}
            pool.target_dedicated = spec.get("targetDedicatedNodes", 0)
            pool.target_low = spec.get("targetLowPriorityNodes", 0)
            pool.slots = spec.get("taskSlotsPerNode", 1)
            pool.fill_pack = spec.get("taskSchedulingPolicy", {}).get("nodeFillType") == "pack"
            pool.node_seq = itertools.count(1)
            pool.resize_errors = []
            pool.dir = self.workdir / "pools" / f"{key}-{pool.seq}"
            self.pools[key] = pool
            self._reconcile_nodes(pool, "requeue")
            return pool

    def get_pool(self, pool_id: str) -> Pool:
        with self.lock:
            return self._pool(pool_id)

    def list_pools(self):
        with self.lock:
            return list(self.pools.values())

    def delete_pool(self, pool_id: str) -> None:
        with self.lock:
            pool = self._pool(pool_id)
            pool.state, pool.state_time = "deleting", now_us()
            for node in list(pool.nodes.values()):
                self._remove_node(pool, node, "requeue")
            # The nodes are gone at once, so the deletion completes at once
            # (a client polling for it sees PoolNotFound on its first look).
            del self.pools[pool.key]
        threading.Thread(target=shutil.rmtree, args=(pool.dir, True), daemon=True).start()

    def resize_pool(self, pool_id: str, body) -> None:
        spec = schemas.validate(schemas.POOL_RESIZE, body or {})
        with self.lock:
            pool = self._pool(pool_id)
            if pool.state == "deleting":
                raise exc.PoolBeingDeleted()
            if pool.alloc_state != "steady":
                raise exc.PoolNotSteady()
            if "targetDedicatedNodes" in spec:
                pool.target_dedicated = spec["targetDedicatedNodes"]
            if "targetLowPriorityNodes" in spec:
                pool.target_low = spec["targetLowPriorityNodes"]
            pool.touch(now_us())
            self._reconcile_nodes(pool, spec.get("nodeDeallocationOption", "requeue"))

    def list_nodes(self, pool_id: str):
        with self.lock:
            return list(self._pool(pool_id).nodes.values())

    def get_node(self, pool_id: str, node_id: str) -> Node:
        with self.lock:
            node = self._pool(pool_id).nodes.get(node_id)
            if node is None:
                raise exc.NodeNotFound()
            return node

    def _reconcile_nodes(self, pool: Pool, deallocation: str) -> None:
        """Add or remove nodes until the pool matches its targets."""
        for dedicated, target in ((True, pool.target_dedicated), (False, pool.target_low)):
            nodes = [n for n in pool.nodes.values() if n.dedicated == dedicated and not n.removing]
            for _ in range(target - len(nodes)):
                self._add_node(pool, dedicated)
            if len(nodes) > target:
                # Idle and still-starting nodes go first, then the least busy.
                victims = sorted(nodes, key=lambda n: (n.state not in ("creating", "starting", "idle"),
                                                       n.used, -n.index))
                for node in victims[: len(nodes) - target]:
                    self._remove_node(pool, node, deallocation)
        self._update_allocation(pool)

    def _add_node(self, pool: Pool, dedicated: bool) -> None:
        us = now_us()
        node = Node()
        node.index = next(pool.node_seq)
        node.id = f"tvmps_{uuid.uuid4().hex}{uuid.uuid4().hex}_{'d' if dedicated else 'p'}"
        node.pool, node.dedicated = pool, dedicated
        node.state, node.state_time, node.alloc_time, node.boot_time = "creating", us, us, us
        node.slots, node.used, node.runs = pool.slots, 0, {}
        node.total_run = node.total_succeeded = 0
        node.ip = f"10.0.{node.index // 250}.{node.index % 250 + 4}"
        node.removing = False
        node.dir = pool.dir / node.id
        # One worker thread per task slot: a slot is a thread, nothing more.
        node.executor = ThreadPoolExecutor(max_workers=node.slots, thread_name_prefix=f"node{node.index}")
        pool.nodes[node.id] = node
        self.clock.after(self.node_startup_delay, self._node_booted, node)

    def _node_booted(self, node: Node) -> None:
        with self.lock:
            if node.pool.nodes.get(node.id) is not node or node.state != "creating":
                return
            self._set_node_state(node, "starting")
        config = node.pool.spec["virtualMachineConfiguration"].get("containerConfiguration") or {}
        images = config.get("containerImageNames") or []
        if images and self.runner.docker is not None:
            node.executor.submit(self._prefetch_then_idle, node, images, config.get("containerRegistries") or [])
        else:
            self._node_ready(node)

    def _prefetch_then_idle(self, node, images, registries):
        self.runner.prefetch(images, registries)
        self._node_ready(node)

    def _node_ready(self, node: Node) -> None:
        with self.lock:
            if node.pool.nodes.get(node.id) is not node or node.state not in ("starting", "preempted"):
                return
            self._set_node_state(node, "running" if node.runs else "idle")
            self._update_allocation(node.pool)
            self._schedule(node.pool)

    def _set_node_state(self, node: Node, state: str) -> None:
        if node.state != state:
            node.state, node.state_time = state, now_us()

    def _remove_node(self, pool: Pool, node: Node, deallocation: str) -> None:
        if node.runs and deallocation in ("taskcompletion", "retaineddata"):
            node.removing = True   # taken out once its running tasks end
            self._set_node_state(node, "leavingpool")
            return
        reason = "terminate" if deallocation == "terminate" else "requeue"
        for handle in list(node.runs.values()):
            handle.cancel(reason)
        node.removing = True
        pool.nodes.pop(node.id, None)
        node.executor.shutdown(wait=False)

    def _update_allocation(self, pool: Pool) -> None:
        busy = any(n.state in ("creating", "starting") or n.removing for n in pool.nodes.values())
        state = "resizing" if busy else "steady"
        if pool.alloc_state != state:
            pool.alloc_state, pool.alloc_time = state, now_us()

    # -- jobs --------------------------------------------------------------------------

    def create_job(self, body) -> Job:
        spec = schemas.validate(schemas.JOB_CREATE, body)
        us = now_us()
        with self.lock:
            key = spec["id"].lower()
            if key in self.jobs:
                raise exc.JobExists()
            job = Job()
            job.id, job.key, job.seq, job.spec = spec["id"], key, next(self._seq), spec
            job.state, job.state_time, job.prev_state, job.prev_state_time = "active", us, None, None
            job.creation = us
            job.touch(us)
            job.tasks, job.pending = {}, collections.deque()
            job.counts = dict.fromkeys(_COUNT_KEYS, 0)
            job.slot_counts = dict.fromkeys(_COUNT_KEYS, 0)
            job.end_time = job.terminate_reason = None
            job.task_seq = itertools.count(1)
            self.jobs[key] = job
            # The service treats a job without tasks as having all its tasks
            # complete: terminatejob at creation ends an empty job at once.
            self._check_job_done(job)
            return job

    def get_job(self, job_id: str) -> Job:
        with self.lock:
            return self._job(job_id)

    def list_jobs(self):
        with self.lock:
            return list(self.jobs.values())

    def update_job(self, job_id: str, body) -> Job:
        spec = schemas.validate(schemas.JOB_UPDATE, body or {})
        with self.lock:
            job = self._job(job_id)
            self._ensure_job_mutable(job)
            if "constraints" in spec:
                spec["constraints"] = {**job.spec.get("constraints", {}), **spec["constraints"]}
            job.spec.update(spec)
            job.touch(now_us())
            self._check_job_done(job)
            pool = self.pools.get(job.pool_key)
            if pool is not None:
                self._schedule(pool)
            return job

    def _ensure_job_mutable(self, job: Job) -> None:
        if job.state == "deleting":
            raise exc.JobBeingDeleted()
        if job.state == "terminating":
            raise exc.JobBeingTerminated()
        if job.state == "completed":
            raise exc.JobCompleted()

    def terminate_job(self, job_id: str, body) -> None:
        spec = schemas.validate(schemas.JOB_TERMINATE, body or {})
        with self.lock:
            job = self._job(job_id)
            self._ensure_job_mutable(job)
            self._terminate_job(job, spec.get("terminateReason") or "UserTerminate")

    def _terminate_job(self, job: Job, reason: str) -> None:
        us = now_us()
        self._set_job_state(job, "terminating", us)
        for task in job.tasks.values():
            if task.handle is not None:
                task.handle.cancel("terminate")
        # Running tasks are stopped; their completion is recorded by their
        # worker threads. Queued tasks stay active and are never scheduled.
        job.end_time, job.terminate_reason = us, reason
        self._set_job_state(job, "completed", us)

    def _set_job_state(self, job: Job, state: str, us: int) -> None:
        job.prev_state, job.prev_state_time = job.state, job.state_time
        job.state, job.state_time = state, us
        job.touch(us)

    def delete_job(self, job_id: str) -> None:
        with self.lock:
            job = self._job(job_id)
            self._set_job_state(job, "deleting", now_us())
            dirs = set()
            for task in job.tasks.values():
                if task.handle is not None:
                    task.handle.cancel("delete")
                if task.task_dir is not None:
                    dirs.add(task.task_dir.parent.parent)
                task.state = "deleted"
            del self.jobs[job.key]
        threading.Thread(target=_remove_dirs, args=(dirs,), daemon=True).start()

    def task_counts(self, job_id: str) -> dict:
        with self.lock:
            job = self._job(job_id)
            return {"taskCounts": dict(job.counts), "taskSlotCounts": dict(job.slot_counts)}

    def _check_job_done(self, job: Job) -> None:
        if (job.state == "active" and job.spec.get("onAllTasksComplete") == "terminatejob"
                and job.counts["active"] == 0 and job.counts["running"] == 0):
            self._terminate_job(job, "AllTasksComplete")

    # -- tasks -------------------------------------------------------------------------

    def add_task(self, job_id: str, body) -> Task:
        spec = schemas.validate(schemas.TASK_CREATE, body)
        with self.lock:
            job = self._job(job_id)
            self._ensure_job_mutable(job)
            task = self._add_task(job, spec)
            self._schedule_job(job)
            return task

    def add_task_collection(self, job_id: str, body) -> list[dict]:
        group = schemas.validate(schemas.TASK_GROUP, body)
        items = group["value"]
        if len(items) > schemas.MAX_TASKS_PER_COLLECTION:
            raise exc.RequestBodyTooLarge(values={
                "Reason": f"A task collection may hold at most {schemas.MAX_TASKS_PER_COLLECTION} tasks, "
                          f"this one holds {len(items)}."})
        # Every task is validated before any is added: a malformed task fails
        # the whole request, as the service does.
        specs = [schemas.TASK_CREATE.check(item, f"value[{i}]") for i, item in enumerate(items)]
        results = []
        with self.lock:
            job = self._job(job_id)
            self._ensure_job_mutable(job)
            for spec in specs:
                try:
                    task = self._add_task(job, spec)
                except exc.BatchError as e:
                    results.append({"status": "clienterror", "taskId": spec["id"], "error": e})
                else:
                    results.append({"status": "success", "taskId": task.id, "task": task})
            self._schedule_job(job)
        return results

    def _add_task(self, job: Job, spec: dict) -> Task:
        key = spec["id"].lower()
        if key in job.tasks:
            raise exc.TaskExists()
        us = now_us()
        task = Task()
        task.id, task.key, task.job, task.seq, task.spec = spec["id"], key, job, next(job.task_seq), spec
        task.state, task.state_time, task.prev_state, task.prev_state_time = "active", us, None, None
        task.creation = us
        task.touch(us)
        task.start = task.end = task.exit_code = task.failure = task.result = None
        task.retry_count = task.requeue_count = 0
        task.last_retry = task.last_requeue = None
        task.node = task.node_id = task.pool_id = task.task_dir = task.handle = task.container_info = None
        task.slots = spec.get("requiredSlots", 1)
        job.tasks[key] = task
        job.counts["active"] += 1
        job.slot_counts["active"] += task.slots
        job.pending.append(task)
        job.touch(us)
        return task

    def get_task(self, job_id: str, task_id: str) -> Task:
        with self.lock:
            return self._task(job_id, task_id)

    def list_tasks(self, job_id: str):
        with self.lock:
            return list(self._job(job_id).tasks.values())

    def terminate_task(self, job_id: str, task_id: str) -> None:
        with self.lock:
            task = self._task(job_id, task_id)
            if task.state == "completed":
                return   # terminating a completed task changes nothing
            if task.handle is not None:
                task.handle.cancel("terminate")  # the worker records the end
            else:
                self._complete(task, "failure", failure=execution.failure(
                    "TaskEnded", "The task was terminated before it started."))

    def reactivate_task(self, job_id: str, task_id: str) -> Task:
        """Give a failed task a fresh set of retries: back to active, its last end forgotten."""
        with self.lock:
            job = self._job(job_id)
            self._ensure_job_mutable(job)
            task = self._task(job_id, task_id)
            if task.state != "completed":
                raise exc.TaskNotCompleted()
            if task.result == "success":
                raise exc.TaskSucceeded()
            self._transition(task, "active")
            task.retry_count, task.last_retry = 0, None
            task.exit_code = task.failure = task.result = task.end = None
            task.container_info = None
            job.pending.append(task)
            self._schedule_job(job)
            return task

    def delete_task(self, job_id: str, task_id: str) -> None:
        with self.lock:
            job = self._job(job_id)
            task = self._task(job_id, task_id)
            if task.handle is not None:
                task.handle.cancel("delete")
            self._count(job, task, task.state, -1)
            task.state = "deleted"
            del job.tasks[task.key]
            job.touch(now_us())
            task_dir = task.task_dir
            self._check_job_done(job)
        if task_dir is not None:
            threading.Thread(target=shutil.rmtree, args=(task_dir, True), daemon=True).start()

    def task_dir(self, job_id: str, task_id: str) -> Path:
        with self.lock:
            task = self._task(job_id, task_id)
            if task.task_dir is None:
                raise exc.FileNotFound(message="The task has not run on a node yet; it has no files.")
            return task.task_dir

    # -- state changes ---------------------------------------------------------------

    def _count(self, job: Job, task: Task, state: str, delta: int) -> None:
        b = _bucket(state)
        if b in job.counts:
            job.counts[b] += delta
            job.slot_counts[b] += delta * task.slots
        if state == "completed":
            sf = "succeeded" if task.result == "success" else "failed"
            job.counts[sf] += delta
            job.slot_counts[sf] += delta * task.slots

    def _transition(self, task: Task, state: str) -> None:
        job = task.job
        us = now_us()
        self._count(job, task, task.state, -1)
        task.prev_state, task.prev_state_time = task.state, task.state_time
        task.state, task.state_time = state, us
        self._count(job, task, state, +1)
        task.touch(us)

    def _complete(self, task: Task, result: str, exit_code=None, failure=None) -> None:
        task.result, task.failure = result, failure
        if exit_code is not None:
            task.exit_code = exit_code
        task.end = now_us()
        self._transition(task, "completed")
        self.stats.task("succeeded" if result == "success" else "failed")
        self._check_job_done(task.job)

    def _requeue(self, task: Task, retry: bool) -> None:
        us = now_us()
        if retry:
            task.retry_count += 1
            task.last_retry = us
        else:
            task.requeue_count += 1
            task.last_requeue = us
        self._transition(task, "active")
        task.job.pending.appendleft(task)   # first in line again, as it was before
        self.stats.task("retried" if retry else "requeued")

    # -- scheduling ------------------------------------------------------------------

    def _schedule_job(self, job: Job) -> None:
        pool = self.pools.get(job.pool_key)
        if pool is not None:
            self._schedule(pool)

    def _schedule(self, pool: Pool) -> None:
        """Put queued tasks of the pool's jobs on free slots."""
        if self._closed or pool.state != "active":
            return
        free = [n for n in pool.nodes.values() if n.schedulable and n.free > 0]
        if not free:
            return
        jobs = [j for j in self.jobs.values() if j.state == "active" and j.pending and j.pool_key == pool.key]
        jobs.sort(key=lambda j: (-j.spec.get("priority", 0), j.seq))
        for job in jobs:
            limit = job.spec.get("maxParallelTasks", -1)
            while job.pending and free:
                if limit > 0 and job.counts["running"] >= limit:
                    break
                task = job.pending[0]
                if task.state != "active":
                    job.pending.popleft()   # terminated or deleted while queued
                    continue
                fits = [n for n in free if n.free >= task.slots]
                if not fits:
                    break
                # spread: the node with most room; pack: fill nodes in order.
                node = fits[0] if pool.fill_pack else max(fits, key=lambda n: n.free)
                job.pending.popleft()
                self._dispatch(task, node)
                if node.free == 0:
                    free.remove(node)
            if not free:
                return

    def _dispatch(self, task: Task, node: Node) -> None:
        pool, job = node.pool, task.job
        preempt = not node.dedicated and self.faults.preempts_run()
        handle = execution.RunHandle(preempt_after=self.faults.preempt_after if preempt else None)
        task.handle, task.node, task.node_id, task.pool_id = handle, node, node.id, pool.id
        task.task_dir = node.dir / "workitems" / job.id / "job-1" / task.id
        node.runs[task] = handle
        node.used += task.slots
        self._set_node_state(node, "running")
        self._transition(task, "preparing")
        spec = self._run_spec(task, node)
        node.executor.submit(self._execute, task, node, handle, spec)

    def _run_spec(self, task: Task, node: Node) -> execution.RunSpec:
        job, pool, spec = task.job, node.pool, task.spec
        task_dir = task.task_dir
        env = {
            "AZ_BATCH_ACCOUNT_NAME": self.account,
            "AZ_BATCH_ACCOUNT_URL": self.base_url,
            "AZ_BATCH_POOL_ID": pool.id,
            "AZ_BATCH_NODE_ID": node.id,
            "AZ_BATCH_NODE_IS_DEDICATED": "true" if node.dedicated else "false",
            "AZ_BATCH_NODE_ROOT_DIR": str(node.dir),
            "AZ_BATCH_NODE_SHARED_DIR": str(node.dir / "shared"),
            "AZ_BATCH_NODE_STARTUP_DIR": str(node.dir / "startup"),
            "AZ_BATCH_JOB_ID": job.id,
            "AZ_BATCH_TASK_ID": task.id,
            "AZ_BATCH_TASK_DIR": str(task_dir),
            "AZ_BATCH_TASK_WORKING_DIR": str(task_dir / "wd"),
            "AZ_BATCH_TASK_RETRY_COUNT": str(task.retry_count),
        }
        for setting in job.spec.get("commonEnvironmentSettings", ()):
            env[setting["name"]] = setting.get("value", "")
        for setting in spec.get("environmentSettings", ()):
            env[setting["name"]] = setting.get("value", "")
        config = pool.spec["virtualMachineConfiguration"].get("containerConfiguration") or {}
        wall = duration_seconds(spec.get("constraints", {}).get("maxWallClockTime"))
        return execution.RunSpec(
            task_dir=task_dir, command_line=spec["commandLine"], env=env,
            resource_files=spec.get("resourceFiles", []), output_files=spec.get("outputFiles", []),
            container=spec.get("containerSettings"), registries=config.get("containerRegistries", []),
            node_root=node.dir, max_wall_clock=wall)

    def _execute(self, task: Task, node: Node, handle: execution.RunHandle, spec: execution.RunSpec) -> None:
        """One task run on a node's worker thread."""
        try:
            with self.lock:
                if handle.reason is None and task.state == "preparing":
                    task.start = now_us()
                    self._transition(task, "running")
                    node.total_run += 1
                    self.stats.task("started")
            outcome = execution.Outcome(cancelled=handle.reason)
            upload_failure = None
            if handle.reason is None:
                shutil.rmtree(spec.task_dir, ignore_errors=True)   # a retry starts afresh
                spec.wd.mkdir(parents=True, exist_ok=True)
                failure = execution.download_resource_files(spec)
                if failure is not None:
                    outcome = execution.Outcome(failure=failure)
                elif handle.reason is None:
                    outcome = self.runner.run(spec, handle)
                else:
                    outcome = execution.Outcome(cancelled=handle.reason)
                if outcome.cancelled is None and handle.planned_preempt:
                    # Chosen for preemption but done sooner: the node is still
                    # lost before the end is recorded, so the run is requeued.
                    handle.cancel("preempt")
                    outcome.cancelled = "preempt"
                if outcome.cancelled is None and outcome.failure is None:
                    upload_failure = execution.upload_output_files(spec, outcome.exit_code == 0)
        except Exception as e:  # a bug or a full disk: the task fails, the node lives
            outcome = execution.Outcome(failure=execution.failure(
                "TaskExecutionError", f"{type(e).__name__}: {e}", category="servererror"))
            upload_failure = None
        with self.lock:
            self._record(task, node, handle, outcome, upload_failure)

    def _record(self, task, node, handle, outcome, upload_failure) -> None:
        node.runs.pop(task, None)
        node.used -= task.slots
        if task.handle is handle:
            task.handle = None
        if outcome.container_info:
            task.container_info = outcome.container_info
        if node.state == "running" and not node.runs:
            self._set_node_state(node, "idle")
        if node.removing and not node.runs:
            node.pool.nodes.pop(node.id, None)
            node.executor.shutdown(wait=False)
            self._update_allocation(node.pool)
        reason = outcome.cancelled
        if reason == "preempt":
            self.stats.fault("preempt")
            self._preempt_node(node)
        if task.state == "deleted" or reason in ("delete", "shutdown"):
            pass
        elif reason in ("preempt", "requeue"):
            self._requeue(task, retry=False)
        elif reason == "terminate":
            self._complete(task, "failure", exit_code=outcome.exit_code, failure=execution.failure(
                "TaskEnded", "The task was terminated by a request."))
        elif reason == "wallclock":
            self._complete(task, "failure", exit_code=outcome.exit_code, failure=execution.failure(
                "MaxWallClockTimeExceeded", "The task ran longer than its maxWallClockTime and was stopped."))
        elif outcome.failure is not None:
            self._complete(task, "failure", failure=outcome.failure)
        elif outcome.exit_code != 0:
            retries = task.spec.get("constraints", {}).get(
                "maxTaskRetryCount", task.job.spec.get("constraints", {}).get("maxTaskRetryCount", 0))
            task.exit_code = outcome.exit_code
            task.failure = execution.failure(
                "FailureExitCode", "The task process exited with an unexpected exit code",
                Message="The task process exited with an unexpected exit code",
                AdditionalErrorCode="FailureExitCode")
            if (retries == -1 or task.retry_count < retries) and task.job.state == "active":
                task.result = "failure"
                self._requeue(task, retry=True)
            else:
                self._complete(task, "failure", exit_code=outcome.exit_code, failure=task.failure)
        elif upload_failure is not None:
            self._complete(task, "failure", exit_code=0, failure=upload_failure)
        else:
            node.total_succeeded += 1
            self._complete(task, "success", exit_code=0)
        self._schedule(node.pool)

    def _preempt_node(self, node: Node) -> None:
        """Lose a low-priority node for a while: its runs are requeued."""
        if node.state == "preempted" or node.pool.nodes.get(node.id) is not node:
            return
        self._set_node_state(node, "preempted")
        for handle in list(node.runs.values()):
            handle.cancel("preempt")
        self.clock.after(self.preempt_recovery, self._node_ready, node)

    # -- JSON views ------------------------------------------------------------------

    def pool_json(self, pool: Pool) -> dict:
        spec = pool.spec
        vm = dict(spec["virtualMachineConfiguration"])
        if "containerConfiguration" in vm:
            cc = dict(vm["containerConfiguration"])
            if "containerRegistries" in cc:   # the service never returns passwords
                cc["containerRegistries"] = [{k: v for k, v in r.items() if k != "password"}
                                             for r in cc["containerRegistries"]]
            vm["containerConfiguration"] = cc
        body = {
            "id": pool.id, "url": f"{self.base_url}/pools/{pool.id}", "eTag": pool.etag,
            "lastModified": iso(pool.modified), "creationTime": iso(pool.creation),
            "state": pool.state, "stateTransitionTime": iso(pool.state_time),
            "allocationState": pool.alloc_state, "allocationStateTransitionTime": iso(pool.alloc_time),
            "vmSize": spec["vmSize"], "virtualMachineConfiguration": vm,
            "resizeTimeout": spec.get("resizeTimeout", DEFAULT_RESIZE_TIMEOUT),
            "currentDedicatedNodes": sum(1 for n in pool.nodes.values() if n.dedicated),
            "currentLowPriorityNodes": sum(1 for n in pool.nodes.values() if not n.dedicated),
            "targetDedicatedNodes": pool.target_dedicated, "targetLowPriorityNodes": pool.target_low,
            "enableAutoScale": False,
            "enableInterNodeCommunication": spec.get("enableInterNodeCommunication", False),
            "taskSlotsPerNode": pool.slots,
            "taskSchedulingPolicy": spec.get("taskSchedulingPolicy", {"nodeFillType": "spread"}),
        }
        for key in ("displayName", "metadata", "startTask", "networkConfiguration", "userAccounts",
                    "applicationPackageReferences", "mountConfiguration", "upgradePolicy"):
            if key in spec:
                body[key] = spec[key]
        if pool.resize_errors:
            body["resizeErrors"] = pool.resize_errors
        return body

    def node_json(self, node: Node) -> dict:
        vm = node.pool.spec["virtualMachineConfiguration"]
        body = {
            "id": node.id, "url": f"{self.base_url}/pools/{node.pool.id}/nodes/{node.id}",
            "state": node.state, "schedulingState": "enabled",
            "stateTransitionTime": iso(node.state_time), "lastBootTime": iso(node.boot_time),
            "allocationTime": iso(node.alloc_time), "ipAddress": node.ip,
            "ipv6Address": f"fd00::{node.index:x}",
            "affinityId": f"TVM:{node.id}", "vmSize": node.pool.spec["vmSize"],
            "totalTasksRun": node.total_run, "runningTasksCount": len(node.runs),
            "runningTaskSlotsCount": node.used, "totalTasksSucceeded": node.total_succeeded,
            "isDedicated": node.dedicated,
            "virtualMachineInfo": {"imageReference": vm.get("imageReference", {})},
            "nodeAgentInfo": {"version": "emulator", "lastUpdateTime": iso(node.alloc_time)},
        }
        if node.runs:
            body["recentTasks"] = [{
                "taskUrl": f"{self.base_url}/jobs/{t.job.id}/tasks/{t.id}",
                "jobId": t.job.id, "taskId": t.id, "taskState": t.state,
                "executionInfo": self._execution_info(t),
            } for t in list(node.runs)]
        return body

    def job_json(self, job: Job) -> dict:
        spec = job.spec
        constraints = {"maxWallClockTime": UNLIMITED, "maxTaskRetryCount": 0, **spec.get("constraints", {})}
        body = {
            "id": job.id, "url": f"{self.base_url}/jobs/{job.id}", "eTag": job.etag,
            "lastModified": iso(job.modified), "creationTime": iso(job.creation),
            "state": job.state, "stateTransitionTime": iso(job.state_time),
            "priority": spec.get("priority", 0),
            "allowTaskPreemption": spec.get("allowTaskPreemption", False),
            "maxParallelTasks": spec.get("maxParallelTasks", -1),
            "usesTaskDependencies": spec.get("usesTaskDependencies", False),
            "constraints": constraints, "poolInfo": spec["poolInfo"],
            "onAllTasksComplete": spec.get("onAllTasksComplete", "noaction"),
            "onTaskFailure": spec.get("onTaskFailure", "noaction"),
            "executionInfo": {"startTime": iso(job.creation), "poolId": spec["poolInfo"]["poolId"]},
        }
        if job.prev_state is not None:
            body["previousState"] = job.prev_state
            body["previousStateTransitionTime"] = iso(job.prev_state_time)
        if job.end_time is not None:
            body["executionInfo"]["endTime"] = iso(job.end_time)
            body["executionInfo"]["terminateReason"] = job.terminate_reason
        for key in ("displayName", "commonEnvironmentSettings", "metadata", "jobManagerTask",
                    "jobPreparationTask", "jobReleaseTask", "networkConfiguration"):
            if key in spec:
                body[key] = spec[key]
        return body

    def _execution_info(self, task: Task) -> dict:
        info = {"retryCount": task.retry_count, "requeueCount": task.requeue_count}
        if task.start is not None:
            info["startTime"] = iso(task.start)
        if task.end is not None:
            info["endTime"] = iso(task.end)
        if task.exit_code is not None:
            info["exitCode"] = task.exit_code
        if task.failure is not None:
            info["failureInfo"] = task.failure
        if task.result is not None:
            info["result"] = task.result
        if task.last_retry is not None:
            info["lastRetryTime"] = iso(task.last_retry)
        if task.last_requeue is not None:
            info["lastRequeueTime"] = iso(task.last_requeue)
        if task.container_info is not None:
            info["containerInfo"] = task.container_info
        return info

    def task_json(self, task: Task) -> dict:
        spec = task.spec
        job = task.job
        constraints = spec.get("constraints", {})
        body = {
            "id": task.id, "url": f"{self.base_url}/jobs/{job.id}/tasks/{task.id}", "eTag": task.etag,
            "lastModified": iso(task.modified), "creationTime": iso(task.creation),
            "state": task.state, "stateTransitionTime": iso(task.state_time),
            "commandLine": spec["commandLine"],
            "constraints": {
                "maxWallClockTime": constraints.get("maxWallClockTime", UNLIMITED),
                "retentionTime": constraints.get("retentionTime", DEFAULT_RETENTION),
                "maxTaskRetryCount": constraints.get(
                    "maxTaskRetryCount", job.spec.get("constraints", {}).get("maxTaskRetryCount", 0)),
            },
            "requiredSlots": task.slots,
            "userIdentity": spec.get("userIdentity", {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}}),
        }
        if task.prev_state is not None:
            body["previousState"] = task.prev_state
            body["previousStateTransitionTime"] = iso(task.prev_state_time)
        for key in ("displayName", "containerSettings", "resourceFiles", "outputFiles",
                    "environmentSettings", "exitConditions", "affinityInfo", "multiInstanceSettings",
                    "dependsOn", "applicationPackageReferences", "authenticationTokenSettings"):
            if key in spec:
                body[key] = spec[key]
        if "containerSettings" in body and "registry" in body["containerSettings"]:
            cs = dict(body["containerSettings"])
            cs["registry"] = {k: v for k, v in cs["registry"].items() if k != "password"}
            body["containerSettings"] = cs
        if task.start is not None or task.state == "completed" or task.retry_count or task.requeue_count:
            body["executionInfo"] = self._execution_info(task)
        if task.node_id is not None:
            base = f"{self.base_url}/pools/{task.pool_id}/nodes/{task.node_id}"
            body["nodeInfo"] = {
                "affinityId": f"TVM:{task.node_id}", "nodeUrl": base, "poolId": task.pool_id,
                "nodeId": task.node_id, "taskRootDirectory": f"workitems/{job.id}/job-1/{task.id}",
                "taskRootDirectoryUrl": f"{base}/files/workitems/{job.id}/job-1/{task.id}",
            }
        return body


def _remove_dirs(dirs) -> None:
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def default_workdir() -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="batch-emulator-"))

