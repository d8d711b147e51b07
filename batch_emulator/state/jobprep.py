"""Job preparation tasks: the job's jobPreparationTask, run once on each node
before the first task of that job runs there, and its per-node status.

Sources (the rules below follow them):
- REST description BatchService.json 2025-06-01, BatchJobPreparationTask:
  runs before any task of the job on a node; default id ``jobpreparation``;
  ``waitForSuccess`` (default true): the job's tasks are not scheduled on a
  node until it exits 0; once it has failed (retries per its own
  ``constraints.maxTaskRetryCount`` used up, or a resource file could not be
  fetched) the node never runs tasks of that job; a task added with the same
  id is refused with TaskIdSameAsJobPreparationTask (409).
- BatchJobPreparationTaskExecutionInfo / BatchJobPreparationTaskState:
  ``running`` (including retrying) then ``completed``; startTime, endTime,
  exitCode, retryCount, lastRetryTime, result, failureInfo.
- Jobs_ListJobPreparationAndReleaseTaskStatus: one entry per node that ran
  it; 409 JobPreparationTaskNotSpecified for a job without one.
- "Run job preparation and job release tasks on Batch compute nodes",
  learn.microsoft.com/azure/batch/batch-job-prep-release: resource files of
  the prep task go to its working directory, which the job's tasks reach
  through AZ_BATCH_JOB_PREP_WORKING_DIR.
- "Azure Batch runtime environment variables",
  learn.microsoft.com/azure/batch/batch-compute-node-environment-variables:
  AZ_BATCH_JOB_PREP_DIR and AZ_BATCH_JOB_PREP_WORKING_DIR, the job
  preparation task's directory and working directory on the node.

Choices of the emulator (no source says otherwise): the prep task takes no
task slot; it runs on the node's worker threads; a preempted node forgets its
runs, so the prep task runs again when the node is back (the service reruns
it on a node that did not keep it). jobReleaseTask is accepted and shown but
never run.
"""

from __future__ import annotations

from .. import exceptions as exc
from .. import execution
from .common import duration_seconds, iso, now_us

PREP_DIR_NAME = "jobpreparation"

PREP_FIELDS = {
    "nodeId": lambda r: r.node.id,
    "poolId": lambda r: r.node.pool.id,
    "jobPreparationTaskExecutionInfo/state": lambda r: r.state,
}


class PrepRun:
    """The job preparation task of one job on one node."""
    __slots__ = ("job", "node", "seq", "state", "start", "end", "exit_code", "retry_count",
                 "last_retry", "result", "failure", "container_info", "handle")


def prep_dir(job, node):
    return node.dir / "workitems" / job.id / "job-1" / PREP_DIR_NAME


def prep_env(job, node) -> dict:
    """The variables every task of a job with a prep task sees on that node."""
    if "jobPreparationTask" not in job.spec:
        return {}
    d = prep_dir(job, node)
    return {"AZ_BATCH_JOB_PREP_DIR": str(d), "AZ_BATCH_JOB_PREP_WORKING_DIR": str(d / "wd")}


class JobPrepMixin:
    """Job preparation tasks of BatchBackend."""

    def _preps(self, job) -> dict:
        """node id -> PrepRun of one job (kept by job object: a new job of the same id starts empty)."""
        runs = self.prep_runs.get(job)
        if runs is None:
            # Forget the runs of jobs that are gone, now and then.
            for old in [j for j in self.prep_runs if self.jobs.get(j.key) is not j]:
                del self.prep_runs[old]
            runs = self.prep_runs[job] = {}
        return runs

    def _prep_gate(self, job, node) -> str:
        """May a task of ``job`` go to ``node``: ok, new (prep not run yet), wait, or no."""
        prep = job.spec.get("jobPreparationTask")
        if prep is None:
            return "ok"
        run = self._preps(job).get(node.id)
        if run is None:
            return "new"
        if run.state == "completed":
            return "ok" if run.result == "success" else "no"
        return "ok" if prep.get("waitForSuccess", True) is False else "wait"

    def _start_prep(self, job, node) -> bool:
        """Start the prep task on the node; whether tasks may go there meanwhile."""
        prep = job.spec["jobPreparationTask"]
        run = PrepRun()
        run.job, run.node, run.seq = job, node, next(self._seq)
        run.state, run.start, run.end, run.exit_code = "running", now_us(), None, None
        run.retry_count, run.last_retry, run.result, run.failure, run.container_info = 0, None, None, None, None
        run.handle = execution.RunHandle()
        self._preps(job)[node.id] = run
        node.runs[run] = run.handle   # the node is busy with it (and a kill reaches it)
        self._set_node_state(node, "running")
        node.executor.submit(self._execute_prep, run, self._prep_spec(run))
        return prep.get("waitForSuccess", True) is False

    def _prep_spec(self, run) -> execution.RunSpec:
        job, node = run.job, run.node
        prep, pool = job.spec["jobPreparationTask"], node.pool
        d = prep_dir(job, node)
        env = {
            "AZ_BATCH_ACCOUNT_NAME": self.account, "AZ_BATCH_ACCOUNT_URL": self.base_url,
            "AZ_BATCH_POOL_ID": pool.id, "AZ_BATCH_NODE_ID": node.id,
            "AZ_BATCH_NODE_IS_DEDICATED": "true" if node.dedicated else "false",
            "AZ_BATCH_NODE_ROOT_DIR": str(node.dir), "AZ_BATCH_NODE_SHARED_DIR": str(node.dir / "shared"),
            "AZ_BATCH_NODE_STARTUP_DIR": str(node.dir / "startup"), "AZ_BATCH_JOB_ID": job.id,
            "AZ_BATCH_TASK_ID": prep.get("id", PREP_DIR_NAME), "AZ_BATCH_TASK_DIR": str(d),
            "AZ_BATCH_TASK_WORKING_DIR": str(d / "wd"), "AZ_BATCH_TASK_RETRY_COUNT": "0",
            **prep_env(job, node),
        }
        for setting in job.spec.get("commonEnvironmentSettings", ()):
            env[setting["name"]] = setting.get("value", "")
        for setting in prep.get("environmentSettings", ()):
            env[setting["name"]] = setting.get("value", "")
        config = pool.spec["virtualMachineConfiguration"].get("containerConfiguration") or {}
        return execution.RunSpec(
            task_dir=d, command_line=prep["commandLine"], env=env,
            resource_files=prep.get("resourceFiles", []), container=prep.get("containerSettings"),
            registries=config.get("containerRegistries", []), node_root=node.dir,
            max_wall_clock=duration_seconds(prep.get("constraints", {}).get("maxWallClockTime")),
            images=node.images, user_identity=prep.get("userIdentity"))

    def _execute_prep(self, run, spec: execution.RunSpec) -> None:
        """The prep task on a node's worker thread, retried in place on a non-zero exit."""
        retries = run.job.spec["jobPreparationTask"].get("constraints", {}).get("maxTaskRetryCount", 0)
        handle = run.handle
        while True:
            try:
                spec.wd.mkdir(parents=True, exist_ok=True)   # kept across reruns: the docs ask prep to be idempotent
                spec.env["AZ_BATCH_TASK_RETRY_COUNT"] = str(run.retry_count)
                outcome = execution.Outcome(cancelled=handle.reason)
                if handle.reason is None:
                    failure = execution.download_resource_files(spec)
                    outcome = execution.Outcome(failure=failure) if failure else self.runner.run(spec, handle)
            except Exception as e:  # a bug or a full disk: the prep task fails, the node lives
                outcome = execution.Outcome(failure=execution.failure(
                    "TaskExecutionError", f"{type(e).__name__}: {e}", category="servererror"))
            with self.lock:
                if outcome.container_info:
                    run.container_info = outcome.container_info
                if (outcome.cancelled is None and outcome.failure is None and outcome.exit_code != 0
                        and (retries == -1 or run.retry_count < retries)):
                    run.retry_count += 1                      # still `running` while it retries
                    run.start = run.last_retry = now_us()
                    continue
                self._record_prep(run, outcome)
                return

    def _record_prep(self, run, outcome) -> None:
        node = run.node
        node.runs.pop(run, None)
        if node.state == "running" and not node.runs:
            self._set_node_state(node, "idle")
        if node.removing and not node.runs:
            node.pool.nodes.pop(node.id, None)
            node.executor.shutdown(wait=False)
            self._update_allocation(node.pool)
        if outcome.cancelled is not None:
            # Cut short (preemption, node removed, shutdown): it did not
            # complete, so it runs again before the job's next task there.
            self._preps(run.job).pop(node.id, None)
        else:
            run.end, run.state = now_us(), "completed"
            run.exit_code = outcome.exit_code
            if outcome.failure is not None:
                run.result, run.failure = "failure", outcome.failure
            elif outcome.exit_code != 0:
                run.result = "failure"
                run.failure = execution.failure(
                    "FailureExitCode", "The task process exited with an unexpected exit code",
                    Message="The task process exited with an unexpected exit code",
                    AdditionalErrorCode="FailureExitCode")
            else:
                run.result = "success"
        self._schedule(node.pool)

    # -- Jobs_ListJobPreparationAndReleaseTaskStatus --

    def list_prep_status(self, job_id: str) -> list:
        with self.lock:
            job = self._job(job_id)
            if "jobPreparationTask" not in job.spec and "jobReleaseTask" not in job.spec:
                raise exc.JobPreparationTaskNotSpecified()
            return sorted(self._preps(job).values(), key=lambda r: r.seq)

    def prep_status_json(self, run) -> dict:
        node, job = run.node, run.job
        node_url = f"{self.base_url}/pools/{node.pool.id}/nodes/{node.id}"
        root = f"workitems/{job.id}/job-1/{PREP_DIR_NAME}"
        info = {"startTime": iso(run.start), "state": run.state, "taskRootDirectory": root,
                "taskRootDirectoryUrl": f"{node_url}/files/{root}", "retryCount": run.retry_count}
        if run.last_retry is not None:
            info["lastRetryTime"] = iso(run.last_retry)
        if run.state == "completed":
            info["endTime"] = iso(run.end)
            info["result"] = run.result
            if run.exit_code is not None:
                info["exitCode"] = run.exit_code
            if run.failure is not None:
                info["failureInfo"] = run.failure
        if run.container_info:
            info["containerInfo"] = run.container_info
        return {"poolId": node.pool.id, "nodeId": node.id, "nodeUrl": node_url,
                "jobPreparationTaskExecutionInfo": info}
