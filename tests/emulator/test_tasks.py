"""Tasks through the SDK: create, collections and their limits, list/filter/page, files, ends.

Sources, cited per check: "the spec" is BatchService.json (2025-06-01);
"error codes" is Microsoft's "Batch status and error codes" page. Checks with
no source are the emulator's own choices, listed in batch_emulator/README.md."""

import datetime as dt
import json

import pytest
from azure.batch import models as bm
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from azure.batch import BatchClient

from tests.support.proxy import start_proxy

from .conftest import PYTHON, make_job, py, wait_for, wait_job_done


def task(task_id, code="pass", **extra):
    return bm.BatchTaskCreateOptions(id=task_id, command_line=py(code), **extra)


def test_create_get_and_errors(client, job):
    client.create_task(job, task("T1", display_name="first"))
    got = client.get_task(job, "t1")                          # ids are case-insensitive (the spec, "id")
    assert got.id == "T1" and got.display_name == "first"
    assert got.url.endswith(f"/jobs/{job}/tasks/T1")
    with pytest.raises(ResourceExistsError) as info:
        client.create_task(job, task("t1"))
    assert info.value.error.code == "TaskExists"              # error codes, for this and the next four
    with pytest.raises(ResourceNotFoundError) as info:
        client.get_task(job, "nope")
    assert info.value.error.code == "TaskNotFound"
    with pytest.raises(ResourceNotFoundError) as info:
        client.create_task("no-such-job", task("x"))
    assert info.value.error.code == "JobNotFound"
    with pytest.raises(HttpResponseError) as info:
        client.create_task(job, bm.BatchTaskCreateOptions(id="nocmd"))
    assert info.value.status_code == 400 and info.value.error.code == "MissingRequiredProperty"
    with pytest.raises(HttpResponseError) as info:
        client.create_task(job, task("x" * 65))              # at most 64 characters (the spec, "id")
    assert info.value.error.code == "InvalidPropertyValue"
    with pytest.raises(HttpResponseError) as info:
        client.create_task(job, task("neg", constraints=bm.BatchTaskConstraints(max_task_retry_count=-2)))  # own choice: -1 is the only negative the spec names
    assert info.value.error.code == "InvalidPropertyValue"
    with pytest.raises(HttpResponseError) as info:
        client.create_task(job, task("rf", resource_files=[bm.ResourceFile(http_url="http://x/y")]))  # the spec: httpUrl needs filePath
    assert info.value.error.code == "MissingRequiredProperty"


def test_collection_of_101_is_refused_but_create_tasks_splits(client):
    job = make_job(client, "no-such-pool")    # tasks stay queued: nothing to run
    tasks = [task(f"c{i}") for i in range(101)]
    with pytest.raises(HttpResponseError) as info:
        client.create_task_collection(job, bm.BatchTaskGroup(task_values=tasks))
    # The spec: "The maximum count of Tasks is 100"; the code for 101 is the emulator's own choice.
    assert info.value.status_code == 413 and info.value.error.code == "RequestBodyTooLarge"
    result = client.create_tasks(job, [task(f"t{i}") for i in range(250)], max_concurrency=4)
    assert len(result.result_values) == 250
    assert {r.status for r in result.result_values} == {bm.BatchTaskAddStatus.SUCCESS}
    assert client.get_job_task_counts(job).task_counts.active == 250
    assert len(list(client.list_tasks(job))) == 250


def test_collection_reports_duplicates_per_task(client, job):
    client.create_task(job, task("dup"))
    result = client.create_task_collection(job, bm.BatchTaskGroup(task_values=[task("dup"), task("new")]))
    by_id = {r.task_id: r for r in result.values_property} if hasattr(result, "values_property") else \
        {r.task_id: r for r in result.result_values}
    assert by_id["dup"].status == bm.BatchTaskAddStatus.CLIENT_ERROR
    assert by_id["dup"].error.code == "TaskExists"
    assert by_id["new"].status == bm.BatchTaskAddStatus.SUCCESS


def test_body_over_1mb_is_halved_by_create_tasks(client, emulator):
    # The spec: a collection over 1 MB "will fail with code 'RequestBodyTooLarge' and
    # should be retried again with fewer Tasks"; the SDK's create_tasks does that.
    job = make_job(client, "no-such-pool")
    big = "x" * 30_000        # 100 such tasks make a 3 MB body
    tasks = [task(f"b{i}", environment_settings=[bm.EnvironmentSetting(name="BIG", value=big)]) for i in range(100)]
    proxy = start_proxy(emulator.endpoint)   # what the SDK sent, counted apart from the emulator
    try:
        with BatchClient(proxy.url, emulator.credential()) as through_proxy:
            result = through_proxy.create_tasks(job, tasks)
        assert len(result.result_values) == 100
        sent = sum(proxy.arrived("POST", "/addtaskcollection").values())
        accepted = proxy.count("POST", "/addtaskcollection")
    finally:
        proxy.stop()
    assert sent > accepted >= 3, (sent, accepted)  # refused first, then accepted in parts under 1 MB each
    assert len(list(client.list_tasks(job))) == 100


def test_paging_over_2500_tasks_with_filters(client, emulator):
    # A job on a pool that does not exist keeps its tasks active: nothing runs.
    idle_job = make_job(client, "no-such-pool")
    client.create_tasks(idle_job, [task(f"p{i:04d}") for i in range(2500)], max_concurrency=4)
    ids = [t.id for t in client.list_tasks(idle_job)]
    assert len(ids) == 2500 and len(set(ids)) == 2500
    # The spec: maxresults defaults to 1000, at most 1000.
    assert [len(list(p)) for p in client.list_tasks(idle_job).by_page()] == [1000, 1000, 500]
    page = client.list_tasks(idle_job, max_results=700).by_page()
    sizes = [len(list(p)) for p in page]
    assert sizes == [700, 700, 700, 400]
    selected = list(client.list_tasks(idle_job, filter="state eq 'active'", select=["id", "state"], max_results=1000))
    assert len(selected) == 2500
    assert selected[0].command_line is None and selected[0].state == bm.BatchTaskState.ACTIVE
    assert list(client.list_tasks(idle_job, filter="state eq 'completed'")) == []
    assert sorted(t.id for t in client.list_tasks(idle_job, filter="startswith(id, 'p000')")) == \
        [f"p{i:04d}" for i in range(10)]
    with pytest.raises(HttpResponseError) as info:  # error codes: InvalidQueryParameterValue (400)
        list(client.list_tasks(idle_job, max_results=1001))
    assert info.value.status_code == 400 and info.value.error.code == "InvalidQueryParameterValue"
    with pytest.raises(HttpResponseError) as info:
        list(client.list_tasks(idle_job, filter="state eq"))
    assert info.value.error.code == "InvalidQueryParameterValue"
    client.begin_delete_job(idle_job, polling_interval=0.05).result()


def test_filter_on_state_transition_time(client, job):
    """The kit's polling: only what changed since the last look."""
    client.create_tasks(job, [task(f"s{i}") for i in range(20)])
    wait_job_done(client, job)
    tasks = list(client.list_tasks(job, filter="state eq 'completed'", select=["id", "stateTransitionTime"]))
    assert len(tasks) == 20
    latest = max(t.state_transition_time for t in tasks)
    since = latest.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert list(client.list_tasks(job, filter=f"stateTransitionTime gt datetime'{since}'")) == []
    newer = list(client.list_tasks(job, filter=f"stateTransitionTime ge datetime'{since}'"))
    assert len(newer) >= 1 and all(t.state_transition_time == latest for t in newer)
    client.create_task(job, task("later"))
    wait_job_done(client, job)
    changed = list(client.list_tasks(
        job, filter=f"state eq 'completed' and stateTransitionTime gt datetime'{since}'", select=["id", "state"]))
    assert [t.id for t in changed] == ["later"]


def test_execution_environment_and_files(client, job, tmp_path):
    code = ("import os, json, sys; print(json.dumps({k: v for k, v in os.environ.items() "
            "if k.startswith('AZ_BATCH') or k == 'MY_SETTING'} | {'cwd': os.getcwd(), 'argv': sys.argv[1:]})); "
            "open('result.txt', 'w').write('done'); print('to stderr', file=sys.stderr)")
    client.create_task(job, bm.BatchTaskCreateOptions(
        id="env", command_line=f"{PYTHON} -c {json.dumps(code)} $HOME 'a b'",
        environment_settings=[bm.EnvironmentSetting(name="MY_SETTING", value="42")]))
    wait_job_done(client, job)
    t = client.get_task(job, "env")
    assert t.state == bm.BatchTaskState.COMPLETED and t.execution_info.exit_code == 0
    assert t.execution_info.result == bm.BatchTaskExecutionResult.SUCCESS
    assert t.node_info.node_id and t.node_info.pool_id
    out = json.loads(b"".join(client.download_task_file(job, "env", "stdout.txt")))
    assert out["argv"] == ["$HOME", "a b"]          # the spec: "does not run under a shell"; quotes honoured
    assert out["MY_SETTING"] == "42"
    # Microsoft's "Azure Batch runtime environment variables".
    assert out["AZ_BATCH_TASK_ID"] == "env" and out["AZ_BATCH_JOB_ID"] == job
    assert out["AZ_BATCH_NODE_ID"] == t.node_info.node_id and out["AZ_BATCH_POOL_ID"] == t.node_info.pool_id
    assert out["cwd"] == out["AZ_BATCH_TASK_WORKING_DIR"]
    # Microsoft's "Files and directories in Azure Batch": stdout.txt, stderr.txt and wd/ in the task directory.
    assert b"".join(client.download_task_file(job, "env", "stderr.txt")) == b"to stderr\n"
    assert b"".join(client.download_task_file(job, "env", "wd/result.txt")) == b"done"
    names = {f.name: f for f in client.list_task_files(job, "env", recursive=True)}
    assert {"stdout.txt", "stderr.txt", "wd", "wd/result.txt"} <= set(names)
    assert names["wd"].is_directory and names["wd/result.txt"].properties.content_length == 4
    top = {f.name for f in client.list_task_files(job, "env")}
    assert "wd/result.txt" not in top and "wd" in top
    props = client.get_task_file_properties(job, "env", "wd/result.txt")
    assert props.content_length == 4 and props.is_directory is False
    with pytest.raises(ResourceNotFoundError) as info:
        b"".join(client.download_task_file(job, "env", "wd/missing.txt"))
    assert info.value.status_code == 404   # a streamed call leaves the error body unread
    with pytest.raises(ResourceNotFoundError) as info:
        client.get_task_file_properties(job, "env", "wd/missing.txt")


def test_exit_codes_retries_and_failure_info(client, job, tmp_path):
    counter = tmp_path / "attempts"
    flaky = (f"import pathlib, sys; p = pathlib.Path({str(counter)!r}); n = int(p.read_text()) if p.exists() else 0; "
             "p.write_text(str(n + 1)); sys.exit(0 if n >= 1 else 5)")
    client.create_tasks(job, [
        task("fails", "raise SystemExit(3)", constraints=bm.BatchTaskConstraints(max_task_retry_count=2)),
        task("flaky", flaky, constraints=bm.BatchTaskConstraints(max_task_retry_count=3)),
        task("once", "raise SystemExit(7)"),
        bm.BatchTaskCreateOptions(id="missing", command_line="/no/such/program arg"),
        task("slow", "import time; time.sleep(30)", constraints=bm.BatchTaskConstraints(max_wall_clock_time="PT0.5S")),
    ])
    wait_job_done(client, job)
    t = {x.id: x for x in client.list_tasks(job)}
    fails = t["fails"].execution_info
    # The spec, maxTaskRetryCount: one try, then up to that many retries on a non-zero exit code.
    assert (fails.exit_code, fails.retry_count, fails.result) == (3, 2, bm.BatchTaskExecutionResult.FAILURE)
    # usererror + FailureExitCode: what Azure/azure-sdk-for-java's TaskTests.testOutputFiles
    # (sdk/batch/azure-compute-batch, recorded against the service) asserts for a failing command.
    assert fails.failure_info.category == bm.BatchErrorSourceCategory.USER_ERROR
    assert fails.failure_info.code == "FailureExitCode" and fails.last_retry_time is not None
    flaky_info = t["flaky"].execution_info
    assert (flaky_info.exit_code, flaky_info.retry_count, flaky_info.result) == (0, 1, "success")
    assert t["once"].execution_info.retry_count == 0 and t["once"].execution_info.exit_code == 7
    assert t["missing"].execution_info.failure_info.code == "CommandProgramNotFound"  # own choice
    assert t["missing"].execution_info.exit_code is None
    assert t["slow"].execution_info.failure_info.code == "MaxWallClockTimeExceeded"  # own choice: no source names it
    counts = client.get_job_task_counts(job).task_counts
    assert (counts.completed, counts.succeeded, counts.failed) == (5, 1, 4)


def test_terminate_and_delete_task(client, job):
    client.create_task(job, task("long", "import time; time.sleep(60)"))
    wait_for(lambda: client.get_task(job, "long").state == bm.BatchTaskState.RUNNING, what="running")
    client.terminate_task(job, "long")
    t = wait_for(lambda: (x := client.get_task(job, "long")).state == bm.BatchTaskState.COMPLETED and x,
                 what="terminated")
    assert t.execution_info.failure_info.code == "TaskEnded"  # own choice
    client.terminate_task(job, "long")                 # already complete: nothing happens (own choice)
    client.delete_task(job, "long")
    with pytest.raises(ResourceNotFoundError):
        client.get_task(job, "long")
    with pytest.raises(ResourceNotFoundError) as info:
        client.delete_task(job, "long")
    assert info.value.error.code == "TaskNotFound"


def test_reactivate_a_failed_task(client, job, tmp_path):
    marker = tmp_path / "fixed"
    code = f"import os, sys; sys.exit(0 if os.path.exists({str(marker)!r}) else 9)"
    client.create_tasks(job, [task("broken", code, constraints=bm.BatchTaskConstraints(max_task_retry_count=1)),
                              task("fine")])
    wait_job_done(client, job)
    failed = client.get_task(job, "broken").execution_info
    assert (failed.exit_code, failed.retry_count, failed.result) == (9, 1, "failure")
    with pytest.raises(ResourceExistsError) as info:
        client.reactivate_task(job, "fine")
    # The spec (Tasks_ReactivateTask): fails for a task that succeeded or is not completed.
    # No code is documented for either; for a task that succeeded the emulator answers the
    # generic OperationInvalidForCurrentState of the Batch error-code list (its own choice).
    assert info.value.error.code == "OperationInvalidForCurrentState"
    marker.write_text("")
    client.reactivate_task(job, "broken")
    wait_job_done(client, job)
    again = client.get_task(job, "broken").execution_info   # the spec: retry count reset to 0
    assert (again.exit_code, again.retry_count, again.result) == (0, 0, "success")
    counts = client.get_job_task_counts(job).task_counts
    assert (counts.completed, counts.succeeded, counts.failed) == (2, 2, 0)
    client.create_task(job, task("sleeping", "import time; time.sleep(30)"))
    with pytest.raises(ResourceExistsError) as info:
        client.reactivate_task(job, "sleeping")
    assert info.value.error.code == "TaskNotCompleted"
    client.terminate_task(job, "sleeping")
