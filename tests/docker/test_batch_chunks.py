"""Chunks of iterations per Batch task (--chunk), with containers: Azurite,
the Batch emulator running each chunk task in the worker image built from
the kit and pulled from a registry, a real engine. What runs is the image's
worker.py: it uploads each iteration's file as it is written, and a chunk
that starts again skips the iterations whose results are there.

Each iteration that reaches its end leaves a marker file under its node's
root directory (AZ_BATCH_NODE_ROOT_DIR, on this machine under the
emulator's work directory), so the tests count how often each iteration ran.
"""

import collections
import json
import os
import signal
import subprocess
import time
import uuid

import pytest

from tests.azure.conftest import azurite, make_cloud  # noqa: F401  (fixtures)
from tests.kit import last_line, plain_loop

REPOSITORY = f"superbatch-chunks-{uuid.uuid4().hex[:8]}"  # this session's own (the registry keeps older ones)

TASK = """
import os, time, uuid

def global_config():
    return {{"offset": 100, "pad": "x" * 4000}}

def parameters():
    return list(range({count}))

def task(config, p):
    time.sleep({sleep})
    if p in {fail}:
        raise ValueError(f"iteration {{p}} fails")
    root = os.environ.get("AZ_BATCH_NODE_ROOT_DIR")  # unset in the pre-flight run
    if root:
        open(os.path.join(root, f"ran-{{p}}-{{uuid.uuid4().hex}}"), "w").close()
    return p * p + config["offset"]

def aggregate(results):
    return sum(results)
"""


def task_source(count: int, sleep: float = 0.0, fail=()) -> str:
    return TASK.format(count=count, sleep=sleep, fail=set(fail) or "()")


@pytest.fixture
def batch(kit, registry, base_image):
    """Run the kit on a cloud with container tasks: batch(cloud, run, *flags, build=...)."""
    image = f"{registry.server}/{REPOSITORY}:{uuid.uuid4().hex[:6]}"

    def flags(run: str, *more, build: bool = False) -> list:
        return ["--backend", "azure", "--run", run, "--image", image, "--poll-interval", "0.2", "--fixed-pool",
                *(["--build", "--base-image", base_image, "--push"] if build else []), *more]

    def run(cloud, run_name: str, *more, build: bool = False, env=None, **kwargs):
        return kit.run(*flags(run_name, *more, build=build), env={**cloud.env, **registry.env(), **(env or {})}, timeout=600, **kwargs)

    run.flags = flags
    run.env = lambda cloud: {**cloud.env, **registry.env()}
    return run


def runs_of_each(cloud) -> collections.Counter:
    """How many times each iteration ran to its end, on any node."""
    return collections.Counter(int(path.name.split("-")[1]) for path in cloud.emulator.workdir.glob("pools/*/*/ran-*"))


def journal_chunks(kit, run: str) -> dict:
    return json.loads((kit.run_dir(run) / "run.json").read_text())["backends"]["azure"].get("chunks", {})


def sizes_of(chunks: dict) -> list:
    def number(task_id):
        return int(task_id.rsplit("-c", 1)[1])
    return [sum(last - first + 1 for first, last in chunks[task_id]) for task_id in sorted(chunks, key=number)]


def config_reads(cloud, run: str) -> int:
    return cloud.blobs.count("GET", f"superbatch-{run}/{run}/config.pickle")


def prep_nodes(cloud, job_id: str) -> set:
    return {status.node_id for status in cloud.emulator.client().list_job_preparation_and_release_task_status(job_id)}


def test_chunk_1_7_and_auto_give_the_plain_loops_aggregate_with_the_config_fetched_once_per_node(kit, make_cloud, batch, docker_client):
    cloud = make_cloud(docker="on")
    kit.write_task(task_source(20, sleep=0.05))
    truth = plain_loop(kit.path)
    for run, flags, sizes in (("one", ["--chunk", "1"], None), ("seven", ["--chunk", "7"], [7, 7, 6]), ("auto", [], [10, 10])):
        done = batch(cloud, run, "--dedicated-nodes", "2", *flags, build=run == "one")
        assert done.returncode == 0, done.stderr
        assert last_line(done.stdout) == truth
        assert sorted(kit.outputs(run)) == list(range(20))  # a result file per iteration
        job = f"superbatch-{run}"
        tasks = cloud.job_tasks(job)
        if sizes is None:
            assert len(tasks) == 20 and not journal_chunks(kit, run)
        else:
            assert sizes_of(journal_chunks(kit, run)) == sizes
            assert len(tasks) == len(sizes)
        # The config: one read per node that ran the job's preparation task, not one per task.
        nodes = prep_nodes(cloud, job)
        assert 1 <= len(nodes) <= 2
        assert config_reads(cloud, run) == len(nodes), (run, config_reads(cloud, run), nodes)
    assert set(runs_of_each(cloud).values()) == {3}  # each iteration ran once in each of the three runs


def test_a_failing_iteration_fails_alone_and_resumes_alone(kit, make_cloud, batch, docker_client, tmp_path):
    cloud = make_cloud(docker="on")
    kit.write_task(task_source(12, fail={5}))
    summary = tmp_path / "summary.json"
    first = batch(cloud, "failing", "--chunk", "4", "--summary-json", summary, build=True)
    assert first.returncode == 1, first.stderr
    errors = [line for line in first.stderr.splitlines() if line.startswith("error:")]
    assert errors[0].startswith("error: 1 of 12 tasks failed (first: task 5, exit code 1)"), first.stderr
    assert "ValueError: iteration 5 fails" in first.stderr
    assert sorted(kit.outputs("failing")) == [index for index in range(12) if index != 5]
    assert "ValueError: iteration 5 fails" in (kit.run_dir("failing") / "logs" / "task_5_stderr.txt").read_text()
    assert json.loads(summary.read_text())["tasks"] == {"total": 12, "already_done": 0, "succeeded": 11, "failed": 1}

    kit.write_task(task_source(12))  # fixed, rebuilt and pushed
    again = batch(cloud, "failing", "--chunk", "4", build=True)
    assert again.returncode == 0, again.stderr
    assert last_line(again.stdout) == plain_loop(kit.path)
    # The new job's one chunk holds iteration 5; chunk numbers go on from the old
    # job's, so that its blob folder is new too (old results are never taken for new ones).
    assert journal_chunks(kit, "failing") == {"failing-c4": [[5, 5]]}
    assert runs_of_each(cloud) == {index: 1 for index in range(12)}


def test_sigkill_of_the_controller_then_a_rerun_repeats_no_finished_iteration(kit, make_cloud, batch, docker_client):
    cloud = make_cloud(docker="on")
    kit.write_task(task_source(24, sleep=0.4))
    flags = ["--chunk", "6", "--dedicated-nodes", "2"]
    proc = subprocess.Popen(kit.command(*batch.flags("killed", *flags, build=True)), cwd=kit.path,
                            env={**os.environ, **batch.env(cloud)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while sum(runs_of_each(cloud).values()) < 4:  # some iterations have finished on the nodes
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert sum(runs_of_each(cloud).values()) < 24, "every iteration ended before the kill"

    again = batch(cloud, "killed", *flags)
    assert again.returncode == 0, again.stderr
    assert last_line(again.stdout) == plain_loop(kit.path)
    assert runs_of_each(cloud) == {index: 1 for index in range(24)}


def test_preemption_of_a_chunks_node_loses_no_finished_iteration(kit, make_cloud, batch, docker_client):
    # Iterations of a second: the worker sends each one's result as soon as it
    # ends (shorter ones go in parts, at least once a second).
    cloud = make_cloud(docker="on", faults="preempt=0.8,preempt_after=2.5,seed=5", preempt_recovery=0.3)
    kit.write_task(task_source(16, sleep=1.0))
    done = batch(cloud, "preempted", "--chunk", "8", "--dedicated-nodes", "0", "--spot-nodes", "2", build=True)
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == plain_loop(kit.path)
    preemptions = cloud.emulator.stats()["faults"].get("preempt", 0)
    assert preemptions >= 1
    runs = runs_of_each(cloud)
    assert sorted(runs) == list(range(16))
    # A preemption loses at most the iteration it interrupted: only those run twice.
    repeated = sum(count - 1 for count in runs.values())
    assert repeated <= preemptions, (runs, preemptions)


FLAKY = """
import os

def global_config():
    return {"offset": 1}

def parameters():
    return list(range(10))

def task(config, p):
    root = os.environ.get("AZ_BATCH_NODE_ROOT_DIR")  # unset in the pre-flight run
    if root and p % 3 == 0 and not os.path.exists(os.path.join(root, f"tried-{p}")):
        open(os.path.join(root, f"tried-{p}"), "w").close()
        raise RuntimeError(f"iteration {p} fails on its first attempt")
    return p + config["offset"]

def aggregate(results):
    return sum(results)
"""


def test_retries_retry_a_failed_iteration_alone_inside_its_chunk(kit, make_cloud, batch, docker_client, tmp_path):
    cloud = make_cloud(docker="on")
    kit.write_task(FLAKY)
    summary = tmp_path / "summary.json"
    done = batch(cloud, "flaky", "--chunk", "5", "--retries", "1", "--summary-json", summary, build=True)
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == plain_loop(kit.path)
    tried = sorted(int(path.name.split("-")[1]) for path in cloud.emulator.workdir.glob("pools/*/*/tried-*"))
    assert tried == [0, 3, 6, 9]  # each failed once, then succeeded in the same chunk task
    facts = json.loads(summary.read_text())["facts"]
    assert {fact["index"]: [attempt["outcome"] for attempt in fact["attempts"]] for fact in facts} == {
        index: ["retried", "succeeded"] if index % 3 == 0 else ["succeeded"] for index in range(10)}
    assert all(task.execution_info.retry_count == 0 for task in cloud.job_tasks("superbatch-flaky"))  # the chunks were not retried whole


def test_a_resumed_run_whose_sas_nears_expiry_moves_to_a_new_job_with_a_fresh_preparation_task(kit, make_cloud, batch, docker_client):
    """The job's preparation task carries the config's SAS URL for the job's
    life: a node that joins after it expired could not fetch the config. So a
    rerun past that point starts a new job (fresh URLs everywhere) instead of
    reattaching. Nodes here take 50 s to start, longer than the 36 s SAS."""
    cloud = make_cloud(docker="on", node_startup_delay=50)
    kit.write_task(task_source(6))
    flags = ["--chunk", "3", "--sas-hours", "0.01"]
    first = subprocess.Popen(kit.command(*batch.flags("expiring", *flags, build=True)), cwd=kit.path,
                             env={**os.environ, **batch.env(cloud)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(journal_chunks(kit, "expiring") if (kit.run_dir("expiring") / "run.json").exists() else {}) < 2:
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)  # its job waits for nodes, with URLs that expire in 36 s
    first.wait()
    expires = json.loads((kit.run_dir("expiring") / "run.json").read_text())["backends"]["azure"]["sas_expires"]
    from datetime import datetime, timezone
    time.sleep(max(0.0, (datetime.fromisoformat(expires) - datetime.now(timezone.utc)).total_seconds()) + 2)

    again = batch(cloud, "expiring", *flags)
    assert again.returncode == 0, again.stderr
    assert "creating job superbatch-expiring__2 (the tasks without an output; superbatch-expiring is ended)" in again.stderr
    assert last_line(again.stdout) == plain_loop(kit.path)
    assert runs_of_each(cloud) == {index: 1 for index in range(6)}


def test_auto_sends_again_what_a_time_boxed_first_wave_left_sized_from_its_times(kit, make_cloud, batch, docker_client):
    """--chunk auto's first wave holds every iteration, one chunk per slot,
    each stopped after FIRST_WAVE_SECONDS of work (1 s here instead of 60):
    the iterations they left go out again in chunks sized from their times."""
    cloud = make_cloud(docker="on")
    kit.write_task(task_source(20, sleep=0.3))
    done = batch(cloud, "boxed", "--dedicated-nodes", "2", build=True, env={"SUPERBATCH_FIRST_WAVE_SECONDS": "1"})
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == plain_loop(kit.path)
    chunks = journal_chunks(kit, "boxed")
    sizes = sizes_of(chunks)
    assert sizes[:2] == [10, 10] and len(sizes) > 2, sizes  # the first wave, then what it left, sized
    assert sum(sizes[2:]) < 20 - 2 * 2  # each first-wave chunk ran at least its first few iterations
    assert runs_of_each(cloud) == {index: 1 for index in range(20)}  # nothing ran twice, nothing was lost
