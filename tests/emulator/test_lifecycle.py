"""Slow deletes and terminations, lagging task counts, refused reactivation:
the emulator's --delete-delay and --counts-lag, through the real azure-batch SDK.

On the service a deleted pool or job stays `deleting`, a terminated job
`terminating`, for minutes; task counts come from a periodic snapshot. Here
the delays are short but long enough to be seen and asserted on.
"""

import http.server
import subprocess
import sys
import threading
import time

import pytest
from azure.batch import models as bm
from azure.batch.models._models import BatchJobTerminateOptions   # not exported by azure-batch 15.1
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from tests.support.servers import REPO, start_batch_emulator

from .conftest import make_job, pool_options, py, steady_pool, wait_for

DELAY = 1.5   # --delete-delay of this module's emulator
LAG = 1.5     # --counts-lag


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    with start_batch_emulator(node_startup_delay=0.05, docker="off", delete_delay=DELAY,
                              counts_lag=LAG) as emu, emu.client() as client:
        yield client


@pytest.fixture(scope="module")
def slow_pool(slow):
    return steady_pool(slow, dedicated=1)


def code_of(call) -> str:
    with pytest.raises((ResourceExistsError, ResourceNotFoundError)) as info:
        call()
    return info.value.error.code


def terminate_options(reason="UserTerminate"):
    return BatchJobTerminateOptions(termination_reason=reason)


def sleeper(task_id="sleeper"):
    return bm.BatchTaskCreateOptions(id=task_id, command_line=py("import time; time.sleep(60)"))


def test_a_deleted_pool_is_deleting_then_gone(slow):
    pool_id = steady_pool(slow, dedicated=1)
    poller = slow.begin_delete_pool(pool_id, polling_interval=0.05)
    started = time.monotonic()
    assert slow.get_pool(pool_id).state == bm.BatchPoolState.DELETING
    assert code_of(lambda: slow.begin_resize_pool(
        pool_id, bm.BatchPoolResizeOptions(target_dedicated_nodes=2))) == "PoolBeingDeleted"
    # The id is not free until the pool is gone.
    assert code_of(lambda: slow.create_pool(pool_options(pool_id, dedicated=1))) == "PoolBeingDeleted"
    assert code_of(lambda: slow.begin_delete_pool(pool_id)) == "PoolBeingDeleted"
    poller.result()
    assert time.monotonic() - started >= DELAY * 0.9
    assert code_of(lambda: slow.get_pool(pool_id)) == "PoolNotFound"
    assert code_of(lambda: slow.begin_resize_pool(
        pool_id, bm.BatchPoolResizeOptions(target_dedicated_nodes=2))) == "PoolNotFound"
    slow.create_pool(pool_options(pool_id, dedicated=0))   # free again
    slow.begin_delete_pool(pool_id, polling_interval=0.05).result()


def test_a_deleted_job_is_deleting_then_gone(slow, slow_pool):
    job_id = make_job(slow, slow_pool)
    slow.create_task(job_id, sleeper())
    wait_for(lambda: slow.get_task(job_id, "sleeper").state == bm.BatchTaskState.RUNNING, what="running")
    poller = slow.begin_delete_job(job_id, polling_interval=0.05)
    started = time.monotonic()
    assert slow.get_job(job_id).state == bm.BatchJobState.DELETING
    assert code_of(lambda: slow.create_task(job_id, sleeper("late"))) == "JobBeingDeleted"
    assert code_of(lambda: slow.update_job(job_id, bm.BatchJobUpdateOptions(priority=1))) == "JobBeingDeleted"
    assert code_of(lambda: slow.begin_terminate_job(job_id, terminate_options())) == "JobBeingDeleted"
    assert code_of(lambda: slow.create_job(bm.BatchJobCreateOptions(
        id=job_id, pool_info=bm.BatchPoolInfo(pool_id=slow_pool)))) == "JobBeingDeleted"
    poller.result()
    assert time.monotonic() - started >= DELAY * 0.9
    assert code_of(lambda: slow.get_job(job_id)) == "JobNotFound"
    assert code_of(lambda: slow.get_task(job_id, "sleeper")) == "JobNotFound"


def test_a_terminated_job_is_terminating_then_completed(slow, slow_pool):
    job_id = make_job(slow, slow_pool)
    slow.create_tasks(job_id, [
        bm.BatchTaskCreateOptions(id="good", command_line=py("pass")),
        bm.BatchTaskCreateOptions(id="bad", command_line=py("import sys; sys.exit(3)"))])
    wait_for(lambda: all(t.state == bm.BatchTaskState.COMPLETED for t in slow.list_tasks(job_id)),
             what="good and bad done")
    slow.create_task(job_id, sleeper())
    wait_for(lambda: slow.get_task(job_id, "sleeper").state == bm.BatchTaskState.RUNNING, what="running")
    # Documented refusals of Tasks - Reactivate: a task that succeeded, and
    # any task of a job that is terminating or completed.
    assert code_of(lambda: slow.reactivate_task(job_id, "good")) == "OperationInvalidForCurrentState"

    poller = slow.begin_terminate_job(job_id, terminate_options("Enough"), polling_interval=0.05)
    job = slow.get_job(job_id)
    assert job.state == bm.BatchJobState.TERMINATING
    # The reason and end time belong to the completed job only.
    assert job.execution_info.end_time is None and job.execution_info.termination_reason is None
    assert code_of(lambda: slow.create_task(job_id, sleeper("late"))) == "JobBeingTerminated"
    assert code_of(lambda: slow.reactivate_task(job_id, "bad")) == "JobBeingTerminated"
    assert code_of(lambda: slow.begin_terminate_job(job_id, terminate_options())) == "JobBeingTerminated"

    poller.result()
    job = slow.get_job(job_id)
    assert job.state == bm.BatchJobState.COMPLETED
    assert job.previous_state == bm.BatchJobState.TERMINATING
    held = (job.state_transition_time - job.previous_state_transition_time).total_seconds()
    assert held >= DELAY * 0.9
    assert job.execution_info.termination_reason == "Enough" and job.execution_info.end_time is not None
    # Completed only once its running task was stopped.
    task = slow.get_task(job_id, "sleeper")
    assert task.state == bm.BatchTaskState.COMPLETED and task.execution_info.failure_info.code == "TaskEnded"
    assert task.execution_info.end_time <= job.state_transition_time
    assert code_of(lambda: slow.reactivate_task(job_id, "bad")) == "JobCompleted"


def test_terminating_lasts_until_running_tasks_have_stopped(slow, slow_pool):
    # A run busy downloading a resource file stops only when the download
    # ends; the job stays terminating until then, past the delay.
    slow_for = DELAY + 1.5

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            time.sleep(slow_for)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        job_id = make_job(slow, slow_pool)
        slow.create_task(job_id, bm.BatchTaskCreateOptions(
            id="fetching", command_line=py("pass"), resource_files=[bm.ResourceFile(
                http_url=f"http://127.0.0.1:{server.server_port}/x", file_path="x")]))
        wait_for(lambda: slow.get_task(job_id, "fetching").state == bm.BatchTaskState.RUNNING, what="running")
        started = time.monotonic()
        slow.begin_terminate_job(job_id, terminate_options(), polling_interval=0.05).result()
        assert time.monotonic() - started >= DELAY + 0.5
        job = slow.get_job(job_id)
        task = slow.get_task(job_id, "fetching")
        assert job.state == bm.BatchJobState.COMPLETED and task.state == bm.BatchTaskState.COMPLETED
        assert task.execution_info.end_time <= job.state_transition_time
    finally:
        server.shutdown()


def test_all_tasks_complete_passes_through_terminating(slow, slow_pool):
    job_id = make_job(slow, slow_pool)
    slow.create_task(job_id, bm.BatchTaskCreateOptions(id="t", command_line=py("import time; time.sleep(0.3)")))
    slow.update_job(job_id, bm.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))
    seen = wait_for(lambda: (s := slow.get_job(job_id).state) != bm.BatchJobState.ACTIVE and s,
                    what="the job to end")
    assert seen == bm.BatchJobState.TERMINATING
    assert code_of(lambda: slow.create_task(job_id, sleeper("late"))) == "JobBeingTerminated"
    job = wait_for(lambda: (j := slow.get_job(job_id)).state == bm.BatchJobState.COMPLETED and j,
                   what="the job completed")
    assert job.previous_state == bm.BatchJobState.TERMINATING
    assert job.execution_info.termination_reason == "AllTasksComplete"


def test_task_counts_lag_then_catch_up(slow, slow_pool):
    job_id = make_job(slow, slow_pool)
    assert slow.get_job_task_counts(job_id).task_counts.active == 0   # snapshot taken now
    taken = time.monotonic()
    slow.create_task(job_id, bm.BatchTaskCreateOptions(id="quick", command_line=py("pass")))
    # The task list knows at once; the counts do not yet.
    assert [t.id for t in slow.list_tasks(job_id)] == ["quick"]
    counts = slow.get_job_task_counts(job_id).task_counts
    assert time.monotonic() - taken < LAG, "too slow to see the lag"
    assert (counts.active, counts.running, counts.completed) == (0, 0, 0)
    counts = wait_for(lambda: (c := slow.get_job_task_counts(job_id).task_counts).completed == 1 and c,
                      timeout=LAG * 5, what="counts to catch up")
    assert time.monotonic() - taken >= LAG * 0.9
    assert (counts.succeeded, counts.failed, counts.active, counts.running) == (1, 0, 0, 0)


def test_delays_are_off_unless_asked(client, pool):
    # The shared emulator of the other tests runs with the defaults.
    job_id = make_job(client, pool)
    client.begin_terminate_job(job_id, terminate_options(), polling_interval=0.05)
    assert client.get_job(job_id).state == bm.BatchJobState.COMPLETED
    client.begin_delete_job(job_id, polling_interval=0.05)
    assert code_of(lambda: client.get_job(job_id)) == "JobNotFound"


def test_cli_refuses_negative_delays():
    for option in ("--delete-delay", "--counts-lag"):
        proc = subprocess.run([sys.executable, "-m", "batch_emulator", option, "-1"],
                              cwd=REPO, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2 and "not negative" in proc.stderr
