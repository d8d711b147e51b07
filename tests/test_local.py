"""The local backend end to end, through the real command line."""

import json
import os
import signal
import subprocess
import time

from tests.kit import last_line, plain_loop

# Several data types, more tasks than workers; the aggregate depends on every
# result and on their order.
MIXED_TASK = """
    import datetime
    import fractions

    import numpy as np

    def global_config():
        return {"weights": np.array([1.0, 2.0, 3.0]), "label": "mixed", "scale": fractions.Fraction(1, 3)}

    def parameters():
        return [
            7, 2.5, "text", (1, 2, 3), {"a": 1, "b": [2, 3]}, np.arange(4), None, b"bytes",
            frozenset({3, 1, 2}), datetime.date(2026, 11, 24), fractions.Fraction(3, 4), [1.5, -2.5],
            complex(1, 2), True, np.float32(0.5), list(range(10)),
        ]

    def task(config, item):
        if isinstance(item, np.ndarray):
            value = float(item @ np.resize(config["weights"], item.shape))
        elif isinstance(item, (int, float, np.floating, fractions.Fraction)):
            value = float(item * config["scale"])
        elif isinstance(item, complex):
            value = abs(item)
        elif isinstance(item, (str, bytes)):
            value = len(item)
        elif isinstance(item, dict):
            value = item["a"] + sum(item["b"])
        elif isinstance(item, datetime.date):
            value = item.toordinal() % 97
        elif item is None:
            value = -1
        else:
            value = sum(sorted(item))
        return (type(item).__name__, round(float(value), 9))

    def aggregate(results):
        return repr(results)
"""


def test_example_task_prints_the_plain_loops_aggregate(kit):
    done = kit.run("--run", "example")
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == plain_loop(kit.path)


def test_mixed_types_more_tasks_than_workers_match_the_serial_loop(kit, tmp_path):
    kit.write_task(MIXED_TASK)
    summary = tmp_path / "summary.json"
    done = kit.run("--run", "mixed", "--workers", "3", "--summary-json", summary)
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == plain_loop(kit.path)
    report = json.loads(summary.read_text())
    assert report["run"] == "mixed" and report["backend"] == "local"
    assert report["tasks"] == {"total": 16, "already_done": 0, "succeeded": 16, "failed": 0}
    assert {"stage", "run", "aggregate"} <= set(report["phases"])
    assert report["failures"] == []
    # Each task ran in its own working directory, removed once its output was home.
    assert sorted(kit.outputs("mixed")) == list(range(16))
    assert not any((kit.run_dir("mixed") / "work").iterdir())


def test_plain_progress_lines_when_stderr_is_not_a_terminal(kit):
    done = kit.run("--run", "lines")
    assert "[superbatch] 4/4 done, 0 failed" in done.stderr
    quiet = kit.run("--run", "quiet", "--quiet")
    assert quiet.stderr == "" and quiet.returncode == 0


FAILING_TASK = """
    import sys

    def global_config(): return 10
    def parameters(): return list(range(6))
    def task(config, i):
        if i == 3:
            print("about to fail on", i, file=sys.stderr)
            raise RuntimeError(f"task {i} is broken")
        return config + i
    def aggregate(results): return sum(results)
"""


def test_a_failing_task_fails_the_run_with_its_index_exit_code_and_stderr(kit, tmp_path):
    kit.write_task(FAILING_TASK)
    summary = tmp_path / "summary.json"
    done = kit.run("--run", "fails", "--summary-json", summary)
    assert done.returncode == 1
    assert done.stdout == ""  # no aggregate
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert "1 of 6 tasks failed (first: task 3, exit code 1)" in error_lines[0]
    assert "about to fail on 3" in done.stderr and "RuntimeError: task 3 is broken" in done.stderr
    assert "Traceback (most recent call last)" in done.stderr  # the task's, quoted
    report = json.loads(summary.read_text())
    assert report["tasks"]["failed"] == 1 and report["tasks"]["succeeded"] == 5
    [failure] = report["failures"]
    assert failure["index"] == 3 and failure["exit_code"] == 1
    assert "RuntimeError: task 3 is broken" in failure["stderr_tail"]
    # The other tasks' outputs are home, and the failure's stderr is kept.
    assert sorted(kit.outputs("fails")) == [0, 1, 2, 4, 5]
    assert "task 3 is broken" in (kit.run_dir("fails") / "logs" / "task_3_stderr.txt").read_text()


def test_allow_failures_aggregates_what_succeeded(kit):
    kit.write_task(FAILING_TASK)
    done = kit.run("--run", "allowed", "--allow-failures")
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == str(sum(10 + i for i in range(6) if i != 3))
    assert "1 tasks failed (3)" in done.stderr


FLAKY_TASK = """
    import os

    def global_config(): return {{"counts": {counts!r}}}
    def parameters(): return list(range(4))
    def task(config, i):
        # Fails on the first two attempts of task 2, then succeeds.
        path = os.path.join(config["counts"], f"attempts_{{i}}")
        with open(path, "a") as file:
            file.write("x")
        if i == 2 and os.path.getsize(path) <= 2:
            raise RuntimeError("flaky")
        return i * i
    def aggregate(results): return sum(results)
"""


def test_retries_run_a_failed_task_again(kit, tmp_path):
    counts = tmp_path / "counts"
    counts.mkdir()
    kit.write_task(FLAKY_TASK.format(counts=str(counts)))
    not_enough = kit.run("--run", "flaky1", "--retries", "1")
    assert not_enough.returncode == 1
    assert (counts / "attempts_2").read_text() == "xx"

    for path in counts.iterdir():
        path.unlink()
    enough = kit.run("--run", "flaky2", "--retries", "2")
    assert enough.returncode == 0, enough.stderr
    assert last_line(enough.stdout) == str(0 + 1 + 4 + 9)
    assert (counts / "attempts_2").read_text() == "xxx"
    assert (counts / "attempts_0").read_text() == "x"  # a task that succeeds runs once


def test_a_task_that_kills_its_process_is_isolated(kit):
    """os._exit breaks the pool; the other tasks still complete, the culprit is named."""
    kit.write_task("""
        import os
        def global_config(): return None
        def parameters(): return list(range(8))
        def task(config, i):
            if i == 5:
                os._exit(7)
            return i
        def aggregate(results): return sum(results)
    """)
    done = kit.run("--run", "crash", "--allow-failures", "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == str(sum(range(8)) - 5)
    assert sorted(kit.outputs("crash")) == [0, 1, 2, 3, 4, 6, 7]
    failed = kit.run("--run", "crash")  # resumed: only task 5 runs, and fails again
    assert "task 5, exit code 7" in failed.stderr


SLOW_TASK = """
    import os
    import time

    def global_config(): return {{"log": {log!r}}}
    def parameters(): return list(range(12))
    def task(config, i):
        time.sleep(0.4)
        # The side effect that shows how often each task ran.
        with open(config["log"], "a") as log:
            log.write(f"{{i}}\\n")
        return i * 10
    def aggregate(results): return sum(results)
"""


def test_killed_controller_resumes_without_rerunning_finished_tasks(kit, tmp_path):
    log = tmp_path / "ran.log"
    kit.write_task(SLOW_TASK.format(log=str(log)))
    process = subprocess.Popen(kit.command("--run", "killed", "--workers", "2"), cwd=kit.path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(kit.outputs("killed")) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        finished_before_kill = set(kit.outputs("killed"))
        assert 4 <= len(finished_before_kill) < 12
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the pool's processes too
        process.wait()

    done = kit.run("--run", "killed", "--summary-json", tmp_path / "summary.json")
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == str(sum(i * 10 for i in range(12)))
    runs = [int(line) for line in log.read_text().split()]
    for index in finished_before_kill:
        assert runs.count(index) == 1, f"task {index} finished before the kill but ran again"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["tasks"]["already_done"] >= len(finished_before_kill)


def test_rerunning_a_finished_run_runs_nothing(kit, tmp_path):
    log = tmp_path / "ran.log"
    kit.write_task(SLOW_TASK.format(log=str(log)).replace("time.sleep(0.4)", "pass"))
    first = kit.run("--run", "twice")
    assert first.returncode == 0, first.stderr
    ran = log.read_text()
    second = kit.run("--run", "twice")
    assert second.returncode == 0 and last_line(second.stdout) == last_line(first.stdout)
    assert log.read_text() == ran
