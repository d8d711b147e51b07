"""--chunk on the docker backend, through the real command line: a container
per chunk of iterations, each iteration still its own result, failure and resume."""

import os
import signal
import subprocess
import time
import uuid

import joblib
import pytest

from tests.kit import last_line, plain_loop

# Each result carries a token drawn when it ran, so that a test can tell a
# result kept from one computed again. Iteration 9 raises until the config says otherwise.
TASK = """
    import sys
    import time
    import uuid

    FIXED = {fixed}  # in the code, not the inputs: a rebuilt image resumes the same run

    def global_config(): return {{"sleep": {sleep}}}
    def parameters(): return [{{"i": i, "w": (i * 7) % 5}} for i in range({count})]
    def task(config, item):
        time.sleep(config["sleep"])
        if item["i"] == 9 and not FIXED:
            print("iteration 9 is about to fail", file=sys.stderr)
            raise ValueError("iteration 9 is broken")
        return (item["i"] * item["w"], uuid.uuid4().hex)
    def aggregate(results): return [len(results), sum(value for value, _ in results)]
"""


def unique_run(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def tokens(kit, run) -> dict:
    return {index: token for index, (_, token) in kit.outputs(run).items()}


def build(kit, base_image, tag, **values):
    kit.write_task(TASK.format(**{"fixed": True, "sleep": 0.0, "count": 30, **values}))
    image = f"superbatch-worker-test:{tag}"
    return ("--backend", "docker", "--build", "--base-image", base_image, "--image", image)


@pytest.mark.parametrize("chunk", ["1", "7", "auto"])
def test_every_chunk_size_gives_the_plain_loops_aggregate(kit, base_image, docker_client, chunk):
    docker = build(kit, base_image, "chunks")
    run = unique_run("chunks")
    done = kit.run(*docker, "--run", run, "--chunk", chunk, "--workers", "2", "--quiet")
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == plain_loop(kit.path)
    assert sorted(kit.outputs(run)) == list(range(30))
    assert list((kit.run_dir(run) / "work").iterdir()) == []
    assert docker_client.containers.list(all=True, filters={"label": f"superbatch.run={run}"}) == []


def test_a_failing_iteration_fails_alone_and_resumes_alone(kit, base_image):
    docker = build(kit, base_image, "chunk-fails", fixed=False, count=20)
    run = unique_run("chunk-fails")
    failed = kit.run(*docker, "--run", run, "--chunk", "7", "--workers", "2")
    assert failed.returncode == 1
    assert "1 of 20 tasks failed (first: task 9, exit code 1)" in failed.stderr
    assert "iteration 9 is about to fail" in failed.stderr and "ValueError: iteration 9 is broken" in failed.stderr
    assert sorted(kit.outputs(run)) == [i for i in range(20) if i != 9]
    before = tokens(kit, run)

    docker = build(kit, base_image, "chunk-fails", fixed=True, count=20)
    done = kit.run(*docker, "--run", run, "--chunk", "7")
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == plain_loop(kit.path)
    after = tokens(kit, run)
    assert {index for index in after if after[index] != before.get(index)} == {9}  # only it ran again


def test_sigkill_mid_run_and_a_rerun_repeat_no_finished_iteration(kit, base_image, docker_client):
    docker = build(kit, base_image, "chunk-killed", sleep=0.5, count=24)
    run = unique_run("chunk-killed")
    process = subprocess.Popen(kit.command(*docker, "--run", run, "--chunk", "6", "--workers", "2"), cwd=kit.path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    work = kit.run_dir(run) / "work"
    try:
        deadline = time.monotonic() + 300
        while len(list(work.glob("chunk_*/task_*_output.pickle"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)  # mid-chunk: its results so far are in the chunk's folder
        process.wait()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    for container in docker_client.containers.list(all=True, filters={"label": f"superbatch.run={run}"}):
        container.remove(force=True)  # what a user cleaning up would do; the results already written stay
    finished = {path.name: joblib.load(path)[1] for path in [*kit.run_dir(run).glob("task_*_output.pickle"), *work.glob("chunk_*/task_*_output.pickle")]}
    assert 3 <= len(finished) < 24

    done = kit.run("--backend", "docker", "--image", "superbatch-worker-test:chunk-killed", "--run", run, "--chunk", "6")
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == plain_loop(kit.path)
    for name, token in finished.items():
        assert joblib.load(kit.run_dir(run) / name)[1] == token, f"{name} was finished before the kill but computed again"
