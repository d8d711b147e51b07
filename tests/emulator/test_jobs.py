"""Jobs through the SDK: create, get, list, update, terminate, delete, task counts.

Sources: BatchService.json ("the spec") and Microsoft's "Batch status and error
codes" (JobExists, JobNotFound, JobCompleted); the emulator's own choices are
listed in batch_emulator/README.md."""

import pytest
from azure.batch import models as bm
from azure.batch.models._models import BatchJobTerminateOptions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from .conftest import make_job, py, unique, wait_for


def test_job_create_get_list_update(client, pool):
    job_id = make_job(client, pool, priority=10, constraints=bm.BatchJobConstraints(max_task_retry_count=2),
                      common_environment_settings=[bm.EnvironmentSetting(name="A", value="1")])
    job = client.get_job(job_id)
    assert job.id == job_id and job.state == bm.BatchJobState.ACTIVE
    assert job.pool_info.pool_id == pool and job.priority == 10
    assert job.constraints.max_task_retry_count == 2
    assert job.all_tasks_complete_mode == bm.BatchAllTasksCompleteMode.NO_ACTION
    assert job.execution_info.start_time is not None
    assert job_id in [j.id for j in client.list_jobs()]
    assert [j.id for j in client.list_jobs(filter=f"id eq '{job_id}'", select=["id", "state"])] == [job_id]
    client.update_job(job_id, bm.BatchJobUpdateOptions(priority=5))
    job = client.get_job(job_id)
    assert job.priority == 5 and job.constraints.max_task_retry_count == 2


def test_job_errors(client, pool):
    job_id = make_job(client, pool)
    with pytest.raises(ResourceExistsError) as info:
        client.create_job(bm.BatchJobCreateOptions(id=job_id.upper(), pool_info=bm.BatchPoolInfo(pool_id=pool)))
    assert info.value.error.code == "JobExists" and info.value.status_code == 409
    with pytest.raises(ResourceNotFoundError) as info:
        client.get_job(unique("nope"))
    assert info.value.error.code == "JobNotFound"
    with pytest.raises(ResourceNotFoundError) as info:
        client.get_job_task_counts(unique("nope"))
    assert info.value.error.code == "JobNotFound"


def test_task_counts_and_terminatejob_after_adding(client, pool):
    job_id = make_job(client, pool)
    client.create_tasks(job_id, [bm.BatchTaskCreateOptions(id=f"ok{i}", command_line=py("pass")) for i in range(5)]
                        + [bm.BatchTaskCreateOptions(id="bad", command_line=py("raise SystemExit(2)"))])
    # The spec's recommended pattern (onAllTasksComplete): add the tasks, then ask for termination.
    client.update_job(job_id, bm.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))
    wait_for(lambda: client.get_job(job_id).state == bm.BatchJobState.COMPLETED, what="job completed")
    job = client.get_job(job_id)
    assert job.execution_info.termination_reason == "AllTasksComplete"  # the spec, terminationReason
    assert job.execution_info.end_time is not None
    counts = client.get_job_task_counts(job_id)
    tc, sc = counts.task_counts, counts.task_slot_counts
    assert (tc.active, tc.running, tc.completed, tc.succeeded, tc.failed) == (0, 0, 6, 5, 1)
    assert (sc.completed, sc.succeeded, sc.failed) == (6, 5, 1)
    # A completed job takes no more tasks.
    with pytest.raises(ResourceExistsError) as info:
        client.create_task(job_id, bm.BatchTaskCreateOptions(id="late", command_line=py("pass")))
    assert info.value.error.code == "JobCompleted"


def test_terminatejob_at_creation_leaves_an_empty_job_active(client, pool):
    # The spec says a job without tasks counts as all complete, but the service's
    # recording (azure-batch Python test_batch_jobs; tests/emulator/recorded/jobs.json)
    # shows such a job staying active; it ends once its tasks have all completed.
    job_id = make_job(client, pool, all_tasks_complete_mode="terminatejob")
    assert client.get_job(job_id).state == bm.BatchJobState.ACTIVE
    assert client.get_job(job_id).state == bm.BatchJobState.ACTIVE   # still, on a second look
    client.create_task(job_id, bm.BatchTaskCreateOptions(id="t", command_line=py("pass")))
    wait_for(lambda: client.get_job(job_id).state == bm.BatchJobState.COMPLETED, what="job completed")
    assert client.get_job(job_id).execution_info.termination_reason == "AllTasksComplete"


def test_terminate_job_stops_running_tasks(client, pool):
    job_id = make_job(client, pool)
    client.create_task(job_id, bm.BatchTaskCreateOptions(id="sleeper", command_line=py("import time; time.sleep(60)")))
    wait_for(lambda: client.get_task(job_id, "sleeper").state == bm.BatchTaskState.RUNNING, what="running")
    # azure-batch 15.1 cannot send a terminate without options (it fails to
    # serialise a None content type), so a reason is always given.
    client.begin_terminate_job(job_id, BatchJobTerminateOptions(termination_reason="UserTerminate"), polling_interval=0.05).result()
    job = client.get_job(job_id)
    assert job.state == bm.BatchJobState.COMPLETED and job.execution_info.termination_reason == "UserTerminate"
    task = wait_for(lambda: (t := client.get_task(job_id, "sleeper")).state == bm.BatchTaskState.COMPLETED and t,
                    what="task ended")
    assert task.execution_info.result == bm.BatchTaskExecutionResult.FAILURE
    assert task.execution_info.failure_info.code == "TaskEnded"  # own choice


def test_delete_job(client, pool):
    job_id = make_job(client, pool)
    client.create_task(job_id, bm.BatchTaskCreateOptions(id="t", command_line=py("import time; time.sleep(60)")))
    client.begin_delete_job(job_id, polling_interval=0.05).result()
    with pytest.raises(ResourceNotFoundError):
        client.get_job(job_id)
    with pytest.raises(ResourceNotFoundError):
        client.get_task(job_id, "t")
    assert job_id not in [j.id for j in client.list_jobs()]


def test_terminate_job_with_reason(client, pool):
    job_id = make_job(client, pool)
    client.begin_terminate_job(job_id, BatchJobTerminateOptions(termination_reason="Enough"),
                               polling_interval=0.05).result()
    assert client.get_job(job_id).execution_info.termination_reason == "Enough"
    with pytest.raises(ResourceExistsError) as info:
        client.update_job(job_id, bm.BatchJobUpdateOptions(priority=1))
    assert info.value.error.code == "JobCompleted"
