"""Jobs: creation, update, termination, deletion, task counts, and how the
service shows them.
"""

from __future__ import annotations

import collections
import itertools
import shutil
import threading
import time

from .. import exceptions as exc
from .. import schemas
from .common import UNLIMITED, iso, new_etag, now_us


class Job:
    __slots__ = ("id", "key", "seq", "spec", "state", "state_time", "prev_state", "prev_state_time",
                 "creation", "modified", "etag", "tasks", "pending", "counts", "slot_counts",
                 "end_time", "terminate_reason", "task_seq", "counts_seen")

    def touch(self, us):
        self.modified, self.etag = us, new_etag()

    @property
    def pool_key(self) -> str:
        return self.spec["poolInfo"]["poolId"].lower()


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


_COUNT_KEYS = ("active", "running", "completed", "succeeded", "failed")


class JobsMixin:
    """Job operations of BatchBackend."""

    def create_job(self, body) -> Job:
        spec = schemas.validate(schemas.JOB_CREATE, body)
        us = now_us()
        with self.lock:
            key = spec["id"].lower()
            if key in self.jobs:
                # As for pools: the id of a job being deleted is not free yet.
                raise exc.JobBeingDeleted() if self.jobs[key].state == "deleting" else exc.JobExists()
            self._check_job_quota()
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
            job.counts_seen = None
            self.jobs[key] = job
            # No completion check here: a job created with terminatejob and no
            # tasks stays active (recorded: azure-batch Python
            # test_batch_jobs, tests/emulator/recorded/jobs.json); it ends
            # once a task is added and every task has completed.
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
        job.end_time, job.terminate_reason = None, reason
        for task in job.tasks.values():
            if task.handle is not None:
                task.handle.cancel("terminate")
        # Running tasks are stopped; their completion is recorded by their
        # worker threads. Queued tasks stay active and are never scheduled.
        if self.delete_delay <= 0:
            self._job_terminated(job)
        else:
            # The service shows `terminating` until the running tasks have
            # stopped (BatchJobState: "the terminate operation is still in
            # progress"), for at least the configured delay here.
            self.clock.after(self.delete_delay, self._finish_termination, job)

    def _finish_termination(self, job: Job) -> None:
        with self.lock:
            if job.state != "terminating" or self.jobs.get(job.key) is not job:
                return
            if any(t.handle is not None for t in job.tasks.values()):
                self.clock.after(0.02, self._finish_termination, job)   # still stopping
                return
            self._job_terminated(job)

    def _job_terminated(self, job: Job) -> None:
        us = now_us()
        job.end_time = us
        self._set_job_state(job, "completed", us)

    def _set_job_state(self, job: Job, state: str, us: int) -> None:
        job.prev_state, job.prev_state_time = job.state, job.state_time
        job.state, job.state_time = state, us
        job.touch(us)

    def delete_job(self, job_id: str) -> None:
        with self.lock:
            job = self._job(job_id)
            if job.state == "deleting":
                raise exc.JobBeingDeleted()
            self._set_job_state(job, "deleting", now_us())
            job.pending.clear()
            for task in job.tasks.values():
                if task.handle is not None:
                    task.handle.cancel("delete")
            if self.delete_delay <= 0:
                self._job_gone(job)
                return
        # `deleting` while the service stops the job's tasks (BatchJobState);
        # operations on the job answer JobBeingDeleted until it is gone.
        self.clock.after(self.delete_delay, self._job_gone, job)

    def _job_gone(self, job: Job) -> None:
        with self.lock:
            if self.jobs.get(job.key) is not job:
                return
            dirs = set()
            for task in job.tasks.values():
                if task.task_dir is not None:
                    dirs.add(task.task_dir.parent.parent)
                task.state = "deleted"
            del self.jobs[job.key]
        threading.Thread(target=_remove_dirs, args=(dirs,), daemon=True).start()

    def task_counts(self, job_id: str) -> dict:
        with self.lock:
            job = self._job(job_id)
            now = time.monotonic()
            seen = job.counts_seen
            # "Get resource counts": counts are refreshed periodically and can
            # lag the tasks; with counts_lag the answer comes from a snapshot
            # taken at most that many seconds ago.
            if seen is None or now - seen[0] >= self.counts_lag:
                seen = job.counts_seen = (now, dict(job.counts), dict(job.slot_counts))
            return {"taskCounts": dict(seen[1]), "taskSlotCounts": dict(seen[2])}

    def _check_job_done(self, job: Job) -> None:
        if (job.state == "active" and job.spec.get("onAllTasksComplete") == "terminatejob"
                and job.counts["active"] == 0 and job.counts["running"] == 0):
            self._terminate_job(job, "AllTasksComplete")

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


def _remove_dirs(dirs) -> None:
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
