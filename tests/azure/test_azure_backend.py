"""`--backend azure` end to end through the real CLI, on Azurite and the Batch emulator."""

import json
import os
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.kit import last_line, plain_loop
from tests.test_local import FAILING_TASK, MIXED_TASK

SLEEPY_TASK = """
    import time

    def global_config(): return {{"log": {log!r}, "sleep": {sleep}}}
    def parameters(): return list(range({count}))
    def task(config, i):
        time.sleep(config["sleep"])
        with open(config["log"], "a") as log:  # how often each task ran
            log.write(f"{{i}}\\n")
        return i * 3
    def aggregate(results): return sum(results)
"""


def test_same_aggregate_as_the_plain_loop(kit, cloud, tmp_path):
    kit.write_task(MIXED_TASK)
    summary = tmp_path / "summary.json"
    azure = cloud.run(kit, "mixed", "--summary-json", summary)
    assert azure.returncode == 0, azure.stderr
    assert last_line(azure.stdout) == plain_loop(kit.path)
    report = json.loads(summary.read_text())
    assert report["backend"] == "azure" and report["tasks"]["succeeded"] == 16
    assert {"upload", "submit", "run"} <= set(report["phases"])
    job = cloud.emulator.client().get_job("superbatch-mixed")
    assert job.state == "terminating" or job.state == "completed"  # done: the kit ended its job


def test_250_tasks_polled_by_changes_only(kit, cloud, tmp_path):
    log = tmp_path / "ran.log"
    kit.write_task(SLEEPY_TASK.format(log=str(log), sleep=0.0, count=250))
    done = cloud.run(kit, "many", "--dedicated-nodes", "2", "--task-slots", "8")
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == str(sum(i * 3 for i in range(250)))
    assert sorted(map(int, log.read_text().split())) == list(range(250))  # each task ran once

    lists = [urlsplit(url) for url in cloud.batch.urls if urlsplit(url).path.endswith("/tasks") and "filter=" in urlsplit(url).query]
    assert lists, "the job was followed by listing tasks"
    for index, url in enumerate(lists):
        query = parse_qs(url.query)
        assert query["$filter"][0].startswith("state eq 'completed'")
        # what following needs, plus where and when each attempt ran (the run report)
        assert query["$select"][0] == "id,state,stateTransitionTime,executionInfo,nodeInfo,creationTime"
        if index:  # after the first poll, only what changed since
            assert "stateTransitionTime gt datetime'" in query["$filter"][0]
    stats = cloud.emulator.stats()["requests"]["byOperation"]
    polls = stats["Jobs_GetJobTaskCounts"]["200"]
    assert stats["Tasks_ListTasks"]["200"] <= polls + 1  # at most one page per poll here
    assert stats["Tasks_CreateTaskCollection"]["200"] == 3  # 250 tasks: 100 + 100 + 50


def test_a_failing_task_is_reported_with_exit_code_and_stderr(kit, cloud, tmp_path):
    kit.write_task(FAILING_TASK)
    summary = tmp_path / "summary.json"
    failed = cloud.run(kit, "fails", "--summary-json", summary)
    assert failed.returncode == 1
    assert "1 of 6 tasks failed (first: task 3, exit code 1)" in failed.stderr
    assert "RuntimeError: task 3 is broken" in failed.stderr
    report = json.loads(summary.read_text())
    [failure] = report["failures"]
    assert failure["index"] == 3 and failure["exit_code"] == 1
    assert "usererror" in failure["failure_info"].lower()
    assert "task 3 is broken" in (kit.run_dir("fails") / "logs" / "task_3_stderr.txt").read_text()

    allowed = cloud.run(kit, "fails", "--allow-failures")  # resumed: task 3 runs again, fails again
    assert allowed.returncode == 0, allowed.stderr
    assert last_line(allowed.stdout) == str(sum(10 + i for i in range(6) if i != 3))


def test_retries_are_batch_retries(kit, cloud, tmp_path):
    counts = tmp_path / "counts"
    counts.mkdir()
    from tests.test_local import FLAKY_TASK

    kit.write_task(FLAKY_TASK.format(counts=str(counts)))
    done = cloud.run(kit, "flaky", "--retries", "2")
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == str(0 + 1 + 4 + 9)
    [task] = [t for t in cloud.job_tasks("superbatch-flaky") if t.id == "flaky-2"]
    assert task.constraints.max_task_retry_count == 2 and task.execution_info.retry_count == 2


# --- killed at every phase, then resumed ---------------------------------------------------

def slow_down(cloud, phase: str) -> None:
    if phase == "staging":
        cloud.blobs.delays[("PUT", "_resource.pickle")] = 0.03
    elif phase == "submitting":
        cloud.batch.delays[("POST", "/addtaskcollection")] = 0.4
    elif phase == "downloading":
        cloud.blobs.delays[("GET", "_output.pickle")] = 0.05


def reached(cloud, kit, run: str, phase: str, count: int) -> bool:
    if phase == "staging":
        return cloud.blobs.count("PUT", "_resource.pickle") >= 20
    if phase == "submitting":
        return len(cloud.job_tasks(f"superbatch-{run}")) >= 100 if cloud.batch.count("POST", "/addtaskcollection") else False
    if phase == "following":
        return cloud.emulator.stats()["tasks"].get("succeeded", 0) >= 10
    if phase == "downloading":
        return len(kit.outputs(run)) >= 5
    raise ValueError(phase)


@pytest.mark.parametrize("phase", ["staging", "submitting", "following", "downloading"])
def test_killed_while_phase_then_resumed_loses_and_repeats_nothing(kit, cloud, tmp_path, phase):
    count = 250 if phase == "submitting" else 60
    log = tmp_path / "ran.log"
    kit.write_task(SLEEPY_TASK.format(log=str(log), sleep=0.2 if phase == "following" else 0.0, count=count))
    run = f"kill-{phase}"
    slow_down(cloud, phase)
    threads = ["--upload-threads", "1"] if phase == "submitting" else []
    process = subprocess.Popen(kit.command(*cloud.flags(kit, run, "--dedicated-nodes", "2", "--task-slots", "4", *threads)),
                               cwd=kit.path, env={**os.environ, **cloud.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not reached(cloud, kit, run, phase, count):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, f"never reached {phase}"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()

    # What was done when the controller died.
    home_at_kill = set(kit.outputs(run))
    uploaded_at_kill = {blob.name for blob in cloud.container(run).list_blobs()} if cloud.container(run).exists() else set()
    assert len(home_at_kill) < count
    cloud.blobs.delays.clear()
    cloud.batch.delays.clear()

    done = cloud.run(kit, run)
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == str(sum(i * 3 for i in range(count)))

    # No task ran (or was created) twice: each index is in the side-effect log once.
    assert sorted(map(int, log.read_text().split())) == list(range(count))
    assert len(cloud.job_tasks(f"superbatch-{run}")) == count
    # No input uploaded twice: a blob that was there at the kill was not written again.
    writes = cloud.blobs.by_path("PUT", "_resource.pickle")
    for path, times in writes.items():
        name = path.split(f"superbatch-{run}/", 1)[1]
        assert times == 1 or name not in uploaded_at_kill, f"{name} uploaded {times} times"
    assert len(writes) == count
    # No output downloaded twice: an output that was home at the kill was not fetched again.
    reads = cloud.blobs.by_path("GET", "_output.pickle")
    for index in home_at_kill:
        assert reads[f"/devstoreaccount1/superbatch-{run}/{run}/task_{index}_output.pickle"] == 1
    assert len(reads) == count


# --- SAS, secrets and bad settings -----------------------------------------------------------

def test_sas_urls_grant_only_what_each_use_needs(kit, cloud):
    done = cloud.run(kit, "sas", "--sas-hours", "2")
    assert done.returncode == 0, done.stderr
    signed = [urlsplit(url) for url in cloud.blobs.urls if "sig=" in url]
    inputs = [url for url in signed if url.path.endswith((".pickle",)) and "_output" not in url.path]
    outputs = [url for url in signed if "_output" in url.path]
    assert len(inputs) == 2 * 4 and len(outputs) == 4  # config + resource per task; one output each
    now = datetime.now(timezone.utc)
    for url in inputs:
        query = parse_qs(url.query)
        assert query["sp"] == ["r"] and query["sr"] == ["b"], query  # read, this one blob
    for url in outputs:
        query = parse_qs(url.query)
        assert query["sp"] == ["cw"] and query["sr"] == ["c"], query  # create and write, nothing else
    for url in inputs + outputs:
        expiry = datetime.fromisoformat(parse_qs(url.query)["se"][0].replace("Z", "+00:00"))
        assert now + timedelta(hours=1.9) < expiry < now + timedelta(hours=2.1)

    # Every SAS the kit handed to Batch, as the tasks carry them.
    tasks = cloud.job_tasks("superbatch-sas")
    assert len(tasks) == 4
    for task in tasks:
        [config, resource] = task.resource_files
        for resource_file, blob in ((config, "config.pickle"), (resource, f"task_{task.id.rsplit('-', 1)[1]}_resource.pickle")):
            url = urlsplit(resource_file.http_url)
            assert url.path.endswith(f"/sas/{blob}")
            query = parse_qs(url.query)
            assert query["sp"] == ["r"] and query["sr"] == ["b"]
        [output] = task.output_files
        query = parse_qs(urlsplit(output.destination.container.container_url).query)
        assert query["sp"] == ["cw"] and query["sr"] == ["c"]
        # The service answers "TaskSuccess" (recorded: tests/emulator/recorded/tasks.json).
        assert output.upload_options.upload_condition.lower() == "tasksuccess"
        for sas in [parse_qs(urlsplit(f.http_url).query) for f in task.resource_files] + [query]:
            expiry = datetime.fromisoformat(sas["se"][0].replace("Z", "+00:00"))
            assert now + timedelta(hours=1.9) < expiry < now + timedelta(hours=2.1)


def test_no_secret_in_run_folder_logs_or_output(kit, cloud, tmp_path):
    kit.write_task(FAILING_TASK)
    summary = tmp_path / "summary.json"
    done = cloud.run(kit, "secrets", "--allow-failures", "--summary-json", summary, "--debug")
    assert done.returncode == 0, done.stderr
    secrets = [cloud.emulator.key, cloud.azurite.key, "sig="]
    texts = {"stdout": done.stdout, "stderr": done.stderr, "summary": summary.read_text()}
    for path in kit.run_dir("secrets").rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode(errors="replace")
    assert len(texts) > 10
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"{secret[:6]}... found in {where}"


def test_a_wrong_account_key_is_one_line_and_creates_nothing(kit, cloud):
    done = cloud.run(kit, "wrongkey", env={"BATCH_ACCOUNT_KEY": "d3Jvbmcga2V5IGZvciB0aGUgdGVzdA=="})
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith("error: reaching Batch account 'emulator' failed: access denied (")
    assert errors[0].endswith("check the account key or your Entra ID sign-in; check BATCH_ACCOUNT_* variables")
    assert "Traceback" not in done.stderr
    operations = cloud.emulator.stats()["requests"]["byOperation"]
    assert set(operations) == {"Pools_PoolExists"}  # nothing else was asked, nothing created
    assert not cloud.container("wrongkey").exists()


def test_an_endpoint_that_does_not_answer(kit, cloud):
    done = cloud.run(kit, "noanswer", env={"BATCH_ACCOUNT_ENDPOINT": "http://127.0.0.1:9"}, timeout=120)
    assert done.returncode == 1
    assert "the endpoint does not answer" in done.stderr and "Traceback" not in done.stderr


def test_interrupt_prints_resume_and_cancel_commands_and_cancel_terminates(kit, cloud, tmp_path):
    kit.write_task(SLEEPY_TASK.format(log=str(tmp_path / "ran.log"), sleep=3, count=4))
    process = subprocess.Popen(kit.command(*cloud.flags(kit, "stopme")), cwd=kit.path, env={**os.environ, **cloud.env},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not cloud.emulator.stats()["tasks"].get("started"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "the job superbatch-stopme keeps running on Azure Batch" in stderr
    [cancel] = [line for line in stderr.splitlines() if line.strip().startswith("cancel:")]
    assert "--run stopme" in cancel and cancel.endswith(" --cancel")
    assert cloud.emulator.client().get_job("superbatch-stopme").state == "active"

    cancelled = cloud.run(kit, "stopme", "--cancel", "--delete-container")
    assert cancelled.returncode == 0, cancelled.stderr
    assert cloud.emulator.client().get_job("superbatch-stopme").state in ("terminating", "completed")
    assert not cloud.container("stopme").exists()


@pytest.mark.parametrize("loss", ["lose_answers", "drop_requests"])
def test_a_lost_answer_while_adding_tasks_adds_each_task_once(kit, cloud, tmp_path, loss):
    """A task collection's connection is cut: after the tasks were added
    (lose_answers) or before (drop_requests). Either way each task is added
    and run exactly once, and the run ends."""
    log = tmp_path / "ran.log"
    kit.write_task(SLEEPY_TASK.format(log=str(log), sleep=0.0, count=10))
    budget = getattr(cloud.batch, loss)
    budget[("POST", "/addtaskcollection")] = 1
    done = cloud.run(kit, "lost", timeout=120)
    assert done.returncode == 0, done.stderr
    assert budget[("POST", "/addtaskcollection")] == 0  # the cut happened
    assert last_line(done.stdout) == str(sum(i * 3 for i in range(10)))
    assert len(cloud.job_tasks("superbatch-lost")) == 10
    assert sorted(map(int, log.read_text().split())) == list(range(10))  # each ran once
