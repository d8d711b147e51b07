"""Scheduling and running: queued tasks onto free node slots, one run on a
node's worker thread, and how its end is recorded (success, retry, requeue
on preemption, failure).
"""

from __future__ import annotations

import shutil

from .. import execution
from .common import duration_seconds, now_us
from .jobprep import prep_env
from .jobs import Job
from .pools import Node, Pool
from .tasks import Task


class SchedulingMixin:
    """Scheduling and task execution of BatchBackend."""

    def _schedule_job(self, job: Job) -> None:
        pool = self.pools.get(job.pool_key)
        if pool is not None:
            self._schedule(pool)

    def _schedule(self, pool: Pool) -> None:
        """Put queued tasks of the pool's jobs on free slots."""
        if self.stopping() or pool.state != "active":
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
                # A node whose job preparation task has not succeeded yet takes
                # none of the job's tasks (state/jobprep.py).
                fits = [n for n in free if n.free >= task.slots and self._prep_gate(job, n) in ("ok", "new")]
                if not fits:
                    break
                # spread: the node with most room; pack: fill nodes in order.
                node = fits[0] if pool.fill_pack else max(fits, key=lambda n: n.free)
                if self._prep_gate(job, node) == "new" and not self._start_prep(job, node):
                    continue   # the prep task runs first; waitForSuccess keeps the task queued
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
            **prep_env(job, node),
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
            node_root=node.dir, max_wall_clock=wall, images=node.images,
            user_identity=spec.get("userIdentity"))

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
                    upload_failure = execution.upload_output_files(spec, outcome.exit_code == 0, handle)
                    if upload_failure is not None and handle.reason is not None:
                        # The upload was cut short by the cancel (_transport): not the task's failure.
                        outcome.cancelled = handle.reason
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
            self._node_lifetime(node, removed=now_us())
            node.executor.shutdown(wait=False)
            self._update_allocation(node.pool)
        if self.stopping():
            # In flight when the emulator stopped, however the run ended (its
            # storage may have stopped first): not ended, `active` on restart.
            return
        reason = outcome.cancelled
        if reason == "preempt":
            self.stats.fault("preempt")
            self._preempt_node(node)
        if task.state == "deleted" or reason in ("delete", "shutdown"):
            pass
        elif reason in ("preempt", "requeue"):
            self._requeue(task, retry=False, counted=reason == "requeue")
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
