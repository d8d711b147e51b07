"""Tasks: adding, reactivating, terminating and deleting them, their life
cycle (active, preparing, running, completed; retries and requeues), the
job's counts that follow it, and how the service shows a task.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from .. import exceptions as exc
from .. import execution, schemas
from .common import DEFAULT_RETENTION, DEFAULT_USER_IDENTITY, UNLIMITED, iso, new_etag, now_us
from .jobs import Job


class Task:
    __slots__ = ("id", "key", "job", "seq", "spec", "state", "state_time", "prev_state",
                 "prev_state_time", "creation", "modified", "etag", "start", "end", "exit_code",
                 "failure", "result", "retry_count", "requeue_count", "last_retry", "last_requeue",
                 "node", "node_id", "pool_id", "task_dir", "handle", "container_info", "slots")

    def touch(self, us):
        self.modified, self.etag = us, new_etag()


_UPLOAD_CONDITION = {"tasksuccess": "TaskSuccess", "taskfailure": "TaskFailure", "taskcompletion": "TaskCompletion"}

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


def _bucket(state: str) -> str:
    return "running" if state in ("preparing", "running") else state


class TasksMixin:
    """Task operations and task state changes of BatchBackend."""

    def add_task(self, job_id: str, body) -> Task:
        spec = schemas.validate(schemas.TASK_CREATE, body)
        self.stats.task("received")
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
        self.stats.task("received", len(specs))  # every task sent, TaskExists or not: what a resume re-sends
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
        prep = job.spec.get("jobPreparationTask")
        if prep is not None and key == prep.get("id", "jobpreparation").lower():
            raise exc.TaskIdSameAsJobPreparationTask()
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

    def _requeue(self, task: Task, retry: bool, counted: bool = True) -> None:
        """Back to active. `counted=False` is a recovery (a preempted node): the REST
        description counts in requeueCount only requeues a user asked for (a pool
        shrunk, a job disabled), and recovery retries not in retryCount."""
        us = now_us()
        if retry:
            task.retry_count += 1
            task.last_retry = us
        elif counted:
            task.requeue_count += 1
            task.last_requeue = us
        self._transition(task, "active")
        task.job.pending.appendleft(task)   # first in line again, as it was before
        self.stats.task("retried" if retry else "requeued")

    def _execution_info(self, task: Task) -> dict:
        info = {"retryCount": task.retry_count, "requeueCount": task.requeue_count}
        optional = {"startTime": iso(task.start), "endTime": iso(task.end), "exitCode": task.exit_code,
                    "failureInfo": task.failure, "result": task.result, "lastRetryTime": iso(task.last_retry),
                    "lastRequeueTime": iso(task.last_requeue), "containerInfo": task.container_info}
        info.update((key, value) for key, value in optional.items() if value is not None)   # unset: left out
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
            "userIdentity": spec.get("userIdentity", DEFAULT_USER_IDENTITY),
        }
        if task.prev_state is not None:
            body["previousState"] = task.prev_state
            body["previousStateTransitionTime"] = iso(task.prev_state_time)
        for key in ("displayName", "containerSettings", "resourceFiles", "outputFiles",
                    "environmentSettings", "exitConditions", "affinityInfo", "multiInstanceSettings",
                    "dependsOn", "applicationPackageReferences", "authenticationTokenSettings"):
            if key in spec:
                body[key] = spec[key]
        if "outputFiles" in body:
            # Recorded GetTask answers (JS batch-rest, tests/emulator/recorded/tasks.json) spell
            # uploadCondition in PascalCase whatever casing was sent (TaskSuccess, not recorded, by
            # analogy); the REST enum is lower case.
            body["outputFiles"] = [{**of, "uploadOptions": {
                **of["uploadOptions"], "uploadCondition": _UPLOAD_CONDITION[of["uploadOptions"]["uploadCondition"]]}}
                for of in body["outputFiles"]]
        if "containerSettings" in body and "registry" in body["containerSettings"]:
            cs = dict(body["containerSettings"])
            cs["registry"] = {k: v for k, v in cs["registry"].items() if k != "password"}
            body["containerSettings"] = cs
        # Recorded: even a task that never ran carries retryCount and requeueCount 0.
        body["executionInfo"] = self._execution_info(task)
        if task.node_id is not None:
            base = f"{self.base_url}/pools/{task.pool_id}/nodes/{task.node_id}"
            body["nodeInfo"] = {
                "affinityId": f"TVM:{task.node_id}", "nodeUrl": base, "poolId": task.pool_id,
                "nodeId": task.node_id, "taskRootDirectory": f"workitems/{job.id}/job-1/{task.id}",
                "taskRootDirectoryUrl": f"{base}/files/workitems/{job.id}/job-1/{task.id}",
            }
        return body
