"""Job preparation tasks and the modelled fixed cost per task, through the real SDK.

The prep task's resource file is served by a plain HTTP server behind the
counting proxy (tests/support/proxy.py), so each download is seen; the prep
task's runs are counted by a file each run appends to.
"""

from __future__ import annotations

import functools
import http.server
import threading

import pytest
from azure.batch import models as bm
from azure.core.exceptions import HttpResponseError

from tests.support.proxy import start_proxy
from tests.support.servers import start_batch_emulator

from .conftest import make_job, py, steady_pool, wait_for, wait_job_done

CONFIG = b"shared config " * 1000


@pytest.fixture
def config_url(tmp_path):
    """(URL of a config file, the proxy counting its GETs)."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "config.bin").write_bytes(CONFIG)
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    proxy = start_proxy(f"http://127.0.0.1:{server.server_address[1]}")
    try:
        yield f"{proxy.url}/config.bin", proxy
    finally:
        proxy.stop()
        server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def prep_task(config_url: str, runs_file, code: str = "pass", **extra) -> bm.BatchJobPreparationTask:
    """A prep task that records its run (node id) in runs_file, then runs ``code``."""
    record = (f"import os, time; open({str(runs_file)!r}, 'a').write(os.environ['AZ_BATCH_NODE_ID'] + '\\n'); "
              f"time.sleep(0.3); {code}; open('ready', 'w').write('yes')")
    return bm.BatchJobPreparationTask(
        command_line=py(record),
        resource_files=[bm.ResourceFile(http_url=config_url, file_path="config.bin")], **extra)


# A task that fails unless the prep task's directory holds the config and the
# prep task's marker (written after its 0.3 s sleep: proof it had finished).
READ_CONFIG = py(
    "import os, sys; d = os.environ['AZ_BATCH_JOB_PREP_WORKING_DIR']; "
    "assert d == os.path.join(os.environ['AZ_BATCH_JOB_PREP_DIR'], 'wd'); "
    "assert d.endswith(os.path.join('workitems', os.environ['AZ_BATCH_JOB_ID'], 'job-1', 'jobpreparation', 'wd')); "
    "assert open(os.path.join(d, 'ready')).read() == 'yes'; "
    f"assert open(os.path.join(d, 'config.bin'), 'rb').read() == {CONFIG!r}")


def add_tasks(client, job_id: str, n: int, command: str = READ_CONFIG) -> None:
    client.create_tasks(job_id, [bm.BatchTaskCreateOptions(id=f"t{i}", command_line=command) for i in range(n)])


def test_prep_runs_once_per_node_and_fetches_the_config_once_per_node(client, tmp_path, config_url):
    url, proxy = config_url
    runs = tmp_path / "runs.txt"
    pool_id = steady_pool(client, dedicated=2, slots=2, prefix="prep")
    job_id = make_job(client, pool_id, job_preparation_task=prep_task(url, runs))
    add_tasks(client, job_id, 16)
    wait_job_done(client, job_id)

    tasks = list(client.list_tasks(job_id))
    failed = [(t.id, t.execution_info.failure_info) for t in tasks if t.execution_info.result != "success"]
    assert not failed, failed
    nodes = {t.node_info.node_id for t in tasks}
    assert len(nodes) == 2   # both nodes took tasks ...
    ran = runs.read_text().split()
    assert sorted(ran) == sorted(nodes)   # ... and each ran the prep task exactly once
    assert proxy.count("GET", "/config.bin") == 2   # one download per node, not per task

    status = list(client.list_job_preparation_and_release_task_status(job_id))
    assert sorted(s.node_id for s in status) == sorted(nodes)
    for s in status:
        info = s.job_preparation_task_execution_info
        assert s.pool_id == pool_id
        assert (info.state, info.result, info.exit_code, info.retry_count) == ("completed", "success", 0, 0)
        assert info.start_time <= info.end_time
        assert info.task_root_directory == f"workitems/{job_id}/job-1/jobpreparation"
    # A second job on the same nodes runs its own prep task once per node too.
    job2 = make_job(client, pool_id, job_preparation_task=prep_task(url, runs))
    add_tasks(client, job2, 8)
    wait_job_done(client, job2)
    assert len(runs.read_text().split()) == 2 + len({t.node_info.node_id for t in client.list_tasks(job2)})


def test_a_failed_prep_task_keeps_the_jobs_tasks_off_its_node(client, tmp_path, config_url):
    url, proxy = config_url
    runs, bad = tmp_path / "runs.txt", tmp_path / "bad-node"
    # The first node to get here is the bad one: its prep task fails every time.
    fail_on_one = (f"import os\ntry: os.close(os.open({str(bad)!r}, os.O_CREAT | os.O_EXCL | os.O_WRONLY))\n"
                   f"except FileExistsError: pass\nelse: open({str(bad)!r}, 'w').write(os.environ['AZ_BATCH_NODE_ID'])\n"
                   f"if open({str(bad)!r}).read() == os.environ['AZ_BATCH_NODE_ID']: raise SystemExit(3)")
    pool_id = steady_pool(client, dedicated=2, slots=2, prefix="prep")
    job_id = make_job(client, pool_id, job_preparation_task=prep_task(
        url, runs, code=f"exec({fail_on_one!r})", constraints=bm.BatchTaskConstraints(max_task_retry_count=1)))
    add_tasks(client, job_id, 12)
    wait_job_done(client, job_id)

    bad_node = bad.read_text()
    tasks = list(client.list_tasks(job_id))
    assert all(t.execution_info.result == "success" for t in tasks)
    assert {t.node_info.node_id for t in tasks} != {bad_node} and bad_node not in {t.node_info.node_id for t in tasks}
    assert runs.read_text().split().count(bad_node) == 2   # the first run and its one retry

    # The good node may finish every task while the bad one still runs its prep task's retry.
    wait_for(lambda: all(s.job_preparation_task_execution_info.state == "completed"
                         for s in client.list_job_preparation_and_release_task_status(job_id)), what="both prep tasks' ends")
    status = {s.node_id: s.job_preparation_task_execution_info
              for s in client.list_job_preparation_and_release_task_status(job_id)}
    assert len(status) == 2
    failed = status[bad_node]
    assert (failed.state, failed.result, failed.exit_code, failed.retry_count) == ("completed", "failure", 3, 1)
    assert failed.failure_info.code == "FailureExitCode"
    good = [info for node, info in status.items() if node != bad_node][0]
    assert (good.result, good.exit_code) == ("success", 0)


def test_tasks_wait_while_every_node_fails_its_prep_task(client, tmp_path, config_url):
    url, _ = config_url
    pool_id = steady_pool(client, dedicated=1, slots=2, prefix="prep")
    job_id = make_job(client, pool_id, job_preparation_task=prep_task(url, tmp_path / "runs.txt", code="raise SystemExit(1)"))
    add_tasks(client, job_id, 2)
    wait_for(lambda: [s for s in client.list_job_preparation_and_release_task_status(job_id)
                      if s.job_preparation_task_execution_info.state == "completed"], what="the prep task's end")
    counts = client.get_job_task_counts(job_id).task_counts
    assert (counts.active, counts.running, counts.completed) == (2, 0, 0)   # no node may run them


def test_prep_status_and_task_ids_follow_the_rest_description(client, pool, tmp_path, config_url):
    plain = make_job(client, pool)
    with pytest.raises(HttpResponseError) as e:
        list(client.list_job_preparation_and_release_task_status(plain))
    assert (e.value.status_code, e.value.error.code) == (409, "JobPreparationTaskNotSpecified")
    with_prep = make_job(client, pool, job_preparation_task=prep_task(config_url[0], tmp_path / "runs.txt"))
    with pytest.raises(HttpResponseError) as e:
        client.create_task(with_prep, bm.BatchTaskCreateOptions(id="jobpreparation", command_line=py("pass")))
    assert (e.value.status_code, e.value.error.code) == (409, "TaskIdSameAsJobPreparationTask")


def test_task_overhead_is_added_to_each_task_run():
    overhead = 0.4
    with start_batch_emulator(task_overhead=overhead) as emu, emu.client() as client:
        pool_id = steady_pool(client, dedicated=1, slots=4, prefix="overhead")
        job_id = make_job(client, pool_id)
        add_tasks(client, job_id, 4, command=py("pass"))
        wait_job_done(client, job_id)
        for t in client.list_tasks(job_id):
            info = t.execution_info
            assert info.result == "success"
            assert (info.end_time - info.start_time).total_seconds() >= overhead, t.id


def test_nodes_list_while_a_prep_task_runs_there(client, tmp_path, config_url):
    """A node busy with the job preparation task lists like any other: its
    recentTasks name only the job's tasks (the prep task is not one)."""
    url, _ = config_url
    runs = tmp_path / "runs.txt"
    pool_id = steady_pool(client, dedicated=1, slots=1, prefix="preplist")
    job_id = make_job(client, pool_id, job_preparation_task=prep_task(url, runs, code="time.sleep(1.5)"))
    add_tasks(client, job_id, 1)
    wait_for(lambda: runs.exists(), what="the prep task to start")
    nodes = list(client.list_nodes(pool_id))   # answered 500 while the prep task ran, before
    assert [node.state for node in nodes] == ["running"]
    assert not nodes[0].recent_tasks
    wait_job_done(client, job_id)
