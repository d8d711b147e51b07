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
node is removed (back to ``active``, ``requeueCount`` up) or preempted (back to
``active``, neither count up).

Each resource has its own module under ``state/`` (its entity, its
operations, how the service shows it); ``BatchBackend`` puts them together
around one lock, one clock and one set of counters.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

from . import exceptions as exc
from . import execution
from .faults import FaultPlan
from .state.account import AccountMixin, Quotas, parse_allocation
from .state.autoscale import SERVICE_INTERVAL, AutoscaleMixin
from .state.common import Clock, Stats
from .state.jobprep import JobPrepMixin
from .state.jobs import Job, JobsMixin
from .state.pools import Pool, PoolsMixin
from .state.scheduling import SchedulingMixin
from .state.tasks import Task, TasksMixin


class BatchBackend(PoolsMixin, JobsMixin, JobPrepMixin, TasksMixin, SchedulingMixin, AccountMixin, AutoscaleMixin):
    def __init__(self, account: str, workdir: Path, runner: execution.Runner,
                 faults: FaultPlan | None = None, node_startup_delay: float = 0.05,
                 preempt_recovery: float | None = None, quota=None, allocation: str | None = None,
                 delete_delay: float = 0.0, counts_lag: float = 0.0, autoscale_interval: float | None = None):
        self.account = account
        self.quotas = Quotas.parse(quota)
        self.allocation = parse_allocation(allocation)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.runner = runner
        self.faults = faults or FaultPlan()
        self.node_startup_delay = node_startup_delay
        self.preempt_recovery = preempt_recovery if preempt_recovery is not None else max(0.2, node_startup_delay)
        self.delete_delay = delete_delay   # seconds in deleting / terminating (state/pools, state/jobs)
        self.counts_lag = counts_lag       # seconds a task-counts snapshot may be old (state/jobs)
        # Real seconds per service second for autoscale: a 5-minute interval lasts autoscale_interval s.
        self.autoscale_scale = autoscale_interval / SERVICE_INTERVAL if autoscale_interval else 1.0
        self.base_url = "http://127.0.0.1"
        self.lock = threading.RLock()
        self.pools: dict[str, Pool] = {}
        self.jobs: dict[str, Job] = {}
        self.prep_runs: dict = {}   # Job -> {node id: PrepRun} (state/jobprep)
        self.node_lifetimes: dict[str, dict] = {}   # every node ever allocated (state/pools.py _node_lifetime)
        self.stats = Stats()
        self.clock = Clock()
        self._seq = itertools.count(1)
        self._closed = False
        # Set by __main__ when a parent tied the emulator's life to its own.
        self.parent_gone = lambda: False

    # -- lifecycle --

    def stop_runs(self) -> None:
        """Stopping: from now on no run starts and no run's end is recorded.
        A run cut short by the stop (or by storage stopping beside the
        emulator) did not end: it is `active` again on restart (persistence.py)."""
        with self.lock:
            self._closed = True
            for pool in self.pools.values():
                for node in pool.nodes.values():
                    for handle in list(node.runs.values()):
                        handle.cancel("shutdown")

    def stopping(self) -> bool:
        return self._closed or self.parent_gone()

    def close(self) -> None:
        self.stop_runs()
        with self.lock:
            nodes = [n for p in self.pools.values() for n in p.nodes.values()]
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


def default_workdir() -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="batch-emulator-"))
