"""--task-timeout on the local backend, through the real command line: the task
over time is killed and reported as timed out (in the error, the failure list
and the summary JSON), every other task gives what the plain loop gives.

The docker backend's and the azure backend's versions are in
tests/docker/test_timeout.py and tests/azure/test_timeout.py.
"""

import json
import time

import pytest

from tests.kit import plain_results

SLOW_INDEX = 3

# Task 3 sleeps SLOW seconds; the results do not depend on it, so the plain
# loop runs the same file with SLOW = 0.
TIMEOUT_TASK = """
    import time

    SLOW = {slow}

    def global_config():
        return {{"offset": 10}}

    def parameters():
        return list(range(8))

    def task(config, p):
        if p == {index}:
            time.sleep(SLOW)
        return p * p + config["offset"]

    def aggregate(results):
        return sum(results)
"""


def write_timeout_task(kit, slow: float) -> None:
    kit.write_task(TIMEOUT_TASK.format(slow=slow, index=SLOW_INDEX))


def expected_others(kit, tmp_path) -> dict:
    """Task index -> result from the plain serial loop, for every task but the slow one."""
    write_timeout_task(kit, 0)
    results = plain_results(kit.path, tmp_path)
    return {index: value for index, value in enumerate(results) if index != SLOW_INDEX}


def check_timed_out_run(kit, done, run: str, expected: dict, summary_path, limit: str = "2s") -> None:
    """What every backend must show after a run where task 3 went over --task-timeout 2s."""
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: 1 of 8 tasks failed (first: task {SLOW_INDEX}, timed out after {limit} (--task-timeout)); "
                      f"fix task.py and rerun with --run {run} to run only those, or add --allow-failures to aggregate the rest"], done.stderr
    assert f"  task {SLOW_INDEX} timed out after {limit} (--task-timeout); last lines of its stderr:" in done.stderr.splitlines()
    summary = json.loads(summary_path.read_text())
    [failure] = summary["failures"]
    assert failure["index"] == SLOW_INDEX and failure["timed_out"] is True
    assert failure["failure_info"] == f"timed out after {limit} (--task-timeout)"
    assert summary["tasks"]["succeeded"] == 7 and summary["tasks"]["failed"] == 1
    assert kit.outputs(run) == expected  # the others ran to their end, unaffected


def test_local_kills_the_task_over_time_and_runs_the_others(kit, tmp_path):
    expected = expected_others(kit, tmp_path)
    write_timeout_task(kit, 600)
    summary = tmp_path / "summary.json"
    started = time.monotonic()
    done = kit.run("--run", "slow", "--workers", "2", "--task-timeout", "2s", "--summary-json", summary, timeout=120)
    assert time.monotonic() - started < 60, "the slow task was not killed at its timeout"
    check_timed_out_run(kit, done, "slow", expected, summary)


def test_local_subprocess_path_kills_at_the_timeout_too(kit, tmp_path):
    """After the pool broke (the first kill), the others run one process each,
    still under the limit: a second slow task is killed there too."""
    write_timeout_task(kit, 0)
    source = (kit.path / "task.py").read_text().replace("if p == 3:", "if p in (3, 6):").replace("SLOW = 0", "SLOW = 600")
    (kit.path / "task.py").write_text(source)
    summary = tmp_path / "summary.json"
    started = time.monotonic()
    done = kit.run("--run", "slow2", "--workers", "1", "--task-timeout", "15", "--allow-failures", "--summary-json", summary, timeout=120)
    assert time.monotonic() - started < 300  # two kills at 15 s, not two sleeps of 600 s (15 s: process starts are slow on a loaded machine)
    assert done.returncode == 0, done.stderr
    failures = json.loads(summary.read_text())["failures"]
    assert [(f["index"], f["timed_out"]) for f in failures] == [(3, True), (6, True)]
    assert sorted(kit.outputs("slow2")) == [0, 1, 2, 4, 5, 7]


def test_fast_tasks_under_a_timeout_are_untouched(kit, tmp_path):
    write_timeout_task(kit, 0)
    done = kit.run("--run", "fast", "--task-timeout", "1m")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(sum(p * p + 10 for p in range(8)))


@pytest.mark.parametrize("value", ["0", "-5s", "abc", "2d", "nan"])
def test_bad_durations_are_one_line(kit, value):
    write_timeout_task(kit, 0)
    done = kit.run("--run", "bad", f"--task-timeout={value}")
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: argument --task-timeout: expected a positive duration such as 90s, 15m or 2h "
                                   f"(a bare number is seconds), not {value!r} (see --help)")
