"""--backend docker end to end, through the real command line of a copy of the kit."""

import os
import signal
import subprocess
import time
import uuid

from tests.kit import last_line, plain_loop, plain_results

FAILING_TASK = """
    import sys

    import numpy as np

    def global_config():
        return {"power": 3, "size": (10,)}

    def parameters():
        return [{"seed": seed} for seed in (1, 12, 123, 1234)]

    def task(global_config, parameters):
        if parameters["seed"] == 12:
            print("about to fail in the container", file=sys.stderr)
            raise ValueError("seed 12 is cursed")
        rng = np.random.default_rng(parameters["seed"])
        return float(np.sum(rng.random(global_config["size"]) ** global_config["power"]))

    def aggregate(results):
        return sum(results)
"""


SLOW_TASK = """
    import time

    def global_config():
        return None

    def parameters():
        return list(range(6))

    def task(global_config, parameters):
        time.sleep(120)
        return parameters

    def aggregate(results):
        return sum(results)
"""


# Fails on its first attempt: the attempts of a task share its working directory.
FLAKY_TASK = """
    import os

    def global_config():
        return None

    def parameters():
        return [1, 2, 3]

    def task(global_config, parameters):
        if not os.path.exists("tried-once"):
            open("tried-once", "w").close()
            raise RuntimeError("first attempt fails")
        return parameters * 10

    def aggregate(results):
        return sum(results)
"""


def unique_run(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"  # label filters stay this test's own


def containers_of(client, run: str) -> list:
    return client.containers.list(all=True, filters={"label": f"superbatch.run={run}"})


def test_docker_backend_prints_the_plain_loops_aggregate(kit, docker_client, worker_image, tmp_path):
    run = unique_run("in-docker")
    docker = kit.run("--backend", "docker", "--image", worker_image, "--run", run, "--workers", "2", "--quiet")
    assert docker.returncode == 0, docker.stderr
    assert last_line(docker.stdout) == plain_loop(kit.path)
    assert kit.outputs(run) == dict(enumerate(plain_results(kit.path, tmp_path)))

    assert containers_of(docker_client, run) == []  # removed after
    run_dir = kit.run_dir(run)
    assert list((run_dir / "work").iterdir()) == []
    # Written as the host user: ours to read and delete.
    assert {path.stat().st_uid for path in run_dir.rglob("*")} == {os.getuid()}


def test_a_failing_task_in_a_container_reports_its_stderr(kit, docker_client, base_image):
    kit.write_task(FAILING_TASK)
    run = unique_run("failing")
    # --build: the image must hold this task.py; only its layer is rebuilt.
    result = kit.run("--backend", "docker", "--build", "--base-image", base_image, "--image", "superbatch-worker-test:failing",
                     "--run", run, "--retries", "1", "--quiet")
    assert result.returncode == 1
    assert "1 of 4 tasks failed (first: task 1, exit code 1)" in result.stderr
    assert "about to fail in the container" in result.stderr
    assert "ValueError: seed 12 is cursed" in result.stderr
    assert 'File "/app/task.py"' in result.stderr  # the traceback is the container's
    assert "cursed" in kit.run_dir(run).joinpath("logs", "task_1_stderr.txt").read_text()
    assert sorted(kit.outputs(run)) == [0, 2, 3]
    assert containers_of(docker_client, run) == []


def test_retries_run_a_failed_task_again_in_a_new_container(kit, base_image):
    kit.write_task(FLAKY_TASK)
    image = ("--image", "superbatch-worker-test:flaky")
    once = kit.run("--backend", "docker", "--build", "--base-image", base_image, *image, "--run", unique_run("once"), "--quiet")
    assert once.returncode == 1 and "3 of 3 tasks failed" in once.stderr
    retried = kit.run("--backend", "docker", *image, "--run", unique_run("retried"), "--retries", "1", "--quiet")
    assert retried.returncode == 0, retried.stderr
    assert last_line(retried.stdout) == "60"


def test_no_engine_is_one_line(kit, tmp_path):
    result = kit.run("--backend", "docker", "--run", "no-engine", env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no Docker engine is reachable" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not kit.run_dir("no-engine").exists()  # refused before anything was staged


def test_a_missing_image_suggests_build(kit, docker_client):
    result = kit.run("--backend", "docker", "--image", "superbatch-no-such-image:never", "--run", "no-image")
    assert result.returncode == 1
    assert "error: there is no image superbatch-no-such-image:never" in result.stderr
    assert "--build" in result.stderr
    assert not kit.run_dir("no-image").exists()


def test_ctrl_c_kills_and_removes_the_running_containers(kit, docker_client, base_image):
    kit.write_task(SLOW_TASK)
    run = unique_run("interrupted")
    process = subprocess.Popen(kit.command("--backend", "docker", "--build", "--base-image", base_image, "--image", "superbatch-worker-test:slow",
                                           "--run", run, "--workers", "2", "--quiet"),
                               cwd=kit.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(containers_of(docker_client, run)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(containers_of(docker_client, run)) == 2  # --workers 2 of the 6 tasks running
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)  # not the 120 s the tasks would take
    finally:
        process.kill()
    assert process.returncode == 130
    assert f"rerun with --run {run} to resume" in stderr
    assert containers_of(docker_client, run) == []
    run_dir = kit.run_dir(run)
    assert not (run_dir / "logs").exists()  # killed tasks are not failures of the task
    assert list((run_dir / "work").iterdir()) == []
