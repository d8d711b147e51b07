"""`--restage` on the azure backend: a rerun with a changed task.py gives the
plain loop's result and runs only the tasks whose inputs changed.

Batch tasks cannot change once added (their inputs' SAS URLs, where their
output goes), so a restaged run must not reattach to the old job and count
its old successes as done.
"""

import pytest

from tests.kit import last_line, plain_loop

# Each run of a task appends its parameter to a log, so a test can tell which
# tasks ran again.
LOGGING_TASK = """
    def global_config(): return {{"log": {log!r}, "offset": {offset}}}
    def parameters(): return {parameters!r}
    def task(config, p):
        with open(config["log"], "a") as log:
            log.write(f"{{p}}\\n")
        return config["offset"] + p * p
    def aggregate(results): return sum(results)
"""


def ran(log) -> list:
    """The parameters of the tasks that ran since the log was last emptied, then empty it."""
    text = log.read_text() if log.exists() else ""
    log.write_text("")
    return sorted(int(line) for line in text.split())


@pytest.mark.parametrize("change, reran", [
    ({"parameters": [1, 20, 3]}, [20]),                 # one task's parameters
    ({"offset": 1000}, [1, 2, 3]),                      # the config every task shares
    ({"parameters": [1, 2, 3, 4, 5]}, [4, 5]),          # more tasks
    ({"parameters": [1, 2]}, []),                       # fewer tasks
])
def test_a_restaged_run_gives_the_plain_loop_result(kit, cloud, tmp_path, change, reran):
    log = tmp_path / "ran.log"
    first = {"log": str(log), "offset": 100, "parameters": [1, 2, 3]}
    kit.write_task(LOGGING_TASK.format(**first))
    expected = plain_loop(kit.path)
    ran(log)  # the plain loop ran the tasks too
    done = cloud.run(kit, "sweep")
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == expected
    assert ran(log) == [1, 2, 3]

    kit.write_task(LOGGING_TASK.format(**{**first, **change}))
    expected = plain_loop(kit.path)
    ran(log)  # the plain loop ran the tasks too
    refused = cloud.run(kit, "sweep")
    assert refused.returncode != 0 and "--restage" in refused.stderr

    restaged = cloud.run(kit, "sweep", "--restage")
    assert restaged.returncode == 0, restaged.stderr
    assert last_line(restaged.stdout) == expected
    assert ran(log) == reran

    again = cloud.run(kit, "sweep")  # resumed: everything is home, nothing runs
    assert again.returncode == 0, again.stderr
    assert last_line(again.stdout) == expected
    assert ran(log) == []
