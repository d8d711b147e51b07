"""--chunk on the local backend, through the real command line: several
iterations per pool call, each still its own result, failure and resume."""

import json
import os
import signal
import subprocess
import time

import pytest

from tests.kit import last_line, plain_loop

# Each iteration appends its index to a log, so that a test sees how often each ran.
# Iteration {fail} raises until the file {fix} exists.
TASK = """
    import os
    import sys
    import time

    def global_config(): return {{"log": {log!r}, "fix": {fix!r}, "sleep": {sleep}}}
    def parameters(): return [{{"i": i, "w": (i * 7) % 5}} for i in range({count})]
    def task(config, item):
        time.sleep(config["sleep"])
        with open(config["log"], "a") as log:
            log.write(f"{{item['i']}}\\n")
        if item["i"] == {fail} and not os.path.exists(config["fix"]):
            print(f"iteration {{item['i']}} is about to fail", file=sys.stderr)
            raise ValueError(f"iteration {{item['i']}} is broken")
        return item["i"] * item["w"]
    def aggregate(results): return [len(results), sum(results), results[:5]]
"""


def write(kit, tmp_path, count=40, fail=-1, sleep=0.0):
    log, fix = tmp_path / "ran.log", tmp_path / "fixed"
    kit.write_task(TASK.format(log=str(log), fix=str(fix), sleep=sleep, count=count, fail=fail))
    return log, fix


def runs_of(log) -> list:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


@pytest.mark.parametrize("chunk,format", [("1", "pickle"), ("7", "pickle"), ("auto", "pickle"), ("7", "json"), ("auto", "json")])
def test_every_chunk_size_gives_the_plain_loops_aggregate(kit, tmp_path, chunk, format):
    log, _ = write(kit, tmp_path)
    done = kit.run("--run", "c", "--chunk", chunk, "--format", format, "--workers", "2", "--summary-json", tmp_path / "s.json")
    assert done.returncode == 0, done.stderr
    ran = sorted(runs_of(log))
    assert last_line(done.stdout) == plain_loop(kit.path)  # (the plain loop writes to the log too)
    names = {path.name for path in kit.run_dir("c").iterdir()}
    extension = "json" if format == "json" else "pickle"
    assert all(f"task_{i}_output.{extension}" in names for i in range(40))  # each iteration its own file
    assert not [name for name in names if name.startswith("task_") and name.endswith(".txt")]
    assert ran == list(range(40))  # each ran once
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["tasks"]["succeeded"] == 40  # progress and summary count iterations
    assert not list((kit.run_dir("c") / "work").iterdir())


def test_a_failing_iteration_fails_alone_with_its_traceback_and_resumes_alone(kit, tmp_path):
    log, fix = write(kit, tmp_path, count=20, fail=9)
    failed = kit.run("--run", "f", "--chunk", "7", "--workers", "2")
    assert failed.returncode == 1
    assert "1 of 20 tasks failed (first: task 9, exit code 1)" in failed.stderr
    assert "iteration 9 is about to fail" in failed.stderr and "ValueError: iteration 9 is broken" in failed.stderr
    assert sorted(kit.outputs("f")) == [i for i in range(20) if i != 9]  # its chunk's other iterations succeeded
    log_9 = (kit.run_dir("f") / "logs" / "task_9_stderr.txt").read_text()
    assert "iteration 9 is about to fail" in log_9 and "ValueError" in log_9
    assert "iteration 8" not in log_9  # its own stderr, not its chunk's

    allowed = kit.run("--run", "f", "--chunk", "7", "--allow-failures")
    assert allowed.returncode == 0, allowed.stderr
    assert last_line(allowed.stdout).startswith("[19, ")

    fix.write_text("")
    before = runs_of(log)
    done = kit.run("--run", "f", "--chunk", "7")
    assert done.returncode == 0, done.stderr
    assert runs_of(log)[len(before):] == [9]  # only the failed iteration ran again
    assert last_line(done.stdout) == plain_loop(kit.path)


def test_retries_retry_the_failed_iteration_alone(kit, tmp_path):
    log, fix = write(kit, tmp_path, count=14, fail=3)
    done = kit.run("--run", "r", "--chunk", "7", "--retries", "2", "--workers", "1")
    assert done.returncode == 1
    runs = runs_of(log)
    assert runs.count(3) == 3  # tried, then retried twice
    assert all(runs.count(i) == 1 for i in range(14) if i != 3)


def test_sigkill_mid_run_and_a_rerun_repeat_no_finished_iteration(kit, tmp_path):
    log, _ = write(kit, tmp_path, count=30, sleep=0.3)
    process = subprocess.Popen(kit.command("--run", "k", "--chunk", "6", "--workers", "2"), cwd=kit.path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(kit.outputs("k")) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)  # the controller and its pool, mid-chunk
        process.wait()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    finished = set(kit.outputs("k"))
    assert 4 <= len(finished) < 30
    # Each result went home as its iteration ended, not with its chunk: of the
    # iterations that had run, at most one per worker (between its log line and
    # its result) is not home.
    assert len(set(runs_of(log)) - finished) <= 2

    done = kit.run("--run", "k", "--chunk", "6")
    assert done.returncode == 0, done.stderr
    runs = runs_of(log)
    for index in finished:
        assert runs.count(index) == 1, f"iteration {index} finished before the kill but ran again"
    assert last_line(done.stdout) == plain_loop(kit.path)


def test_chunk_refused_where_a_task_must_be_one_iteration(kit, tmp_path):
    write(kit, tmp_path, count=3)
    timeout = kit.run("--run", "t", "--chunk", "7", "--task-timeout", "60")
    assert timeout.returncode == 2 and "--task-timeout limits each task" in timeout.stderr
    command = kit.run("--run", "t2", "--chunk", "7", "--task-command", "python worker.py")
    assert command.returncode == 2 and "a chunk is run by worker.py" in command.stderr
    bad = kit.run("--run", "t3", "--chunk", "0")
    assert bad.returncode == 2 and "--chunk" in bad.stderr
