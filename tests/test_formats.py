"""--format json and workers that are not worker.py, on the local backend,
through the real command line: the JSON run matches the pickle run and the
plain loop, non-JSON values are refused before anything is staged, a run
keeps its format, and the R example (examples/r/) gives the aggregate of its
task written in Python."""

import json

import pytest

from tests.kit import last_line, plain_loop
from tests.r_example import make_task_3_fail, needs_r, r_kit, reference_aggregate  # noqa: F401  (fixture)

PLAIN_TASK = """
def global_config():
    return {"scale": 2.5, "label": "café", "missing": None, "shape": (2, 3)}

def parameters():
    return [{"seed": seed, "flag": seed % 2 == 0} for seed in range(6)]

def task(global_config, parameters):
    value = parameters["seed"] * global_config["scale"] + sum(global_config["shape"])
    return {"value": value, "flag": parameters["flag"], "label": global_config["label"], "missing": global_config["missing"]}

def aggregate(results):
    return (sum(result["value"] for result in results), [result["flag"] for result in results], results[0]["label"], results[0]["missing"])
"""


def test_json_run_gives_the_pickle_runs_aggregate(kit):
    kit.write_task(PLAIN_TASK)
    truth = plain_loop(kit.path)
    as_json = kit.run("--run", "as-json", "--format", "json", "--workers", "2")
    assert as_json.returncode == 0, as_json.stderr
    as_pickle = kit.run("--run", "as-pickle", "--workers", "2")
    assert as_pickle.returncode == 0, as_pickle.stderr
    assert last_line(as_json.stdout) == last_line(as_pickle.stdout) == truth

    folder = kit.run_dir("as-json")
    assert json.loads((folder / "run.json").read_text())["format"] == "json"
    assert json.loads((folder / "config.json").read_bytes().decode("utf-8")) == {"scale": 2.5, "label": "café", "missing": None, "shape": [2, 3]}
    assert json.loads((folder / "task_5_resource.json").read_text()) == {"seed": 5, "flag": False}
    assert json.loads((folder / "task_5_output.json").read_text())["value"] == 17.5
    assert not list(folder.glob("*.pickle"))
    assert json.loads((kit.run_dir("as-pickle") / "run.json").read_text())["format"] == "pickle"


@pytest.mark.parametrize("source, message", [
    ("import numpy\ndef parameters(): return [{'x': 1}, {'x': 2}, {'x': numpy.arange(3)}]",
     "error: task 2's parameters: a value of type ndarray, which JSON cannot represent "
     "(--format json takes dicts with string keys, lists, strings, finite numbers, booleans and None)"),
    ("def parameters(): return [1, {2: 'two'}]",
     "error: task 1's parameters: a dict key of type int (2); JSON object keys are strings (--format json)"),
    ("def parameters(): return [1, 2, 3, [float('nan')]]",
     "error: task 3's parameters: a float nan, which JSON cannot represent (--format json takes finite numbers only; use None for a missing value)"),
    ("def global_config(): return {'when': {1, 2}}",
     "error: the global config: a value of type set, which JSON cannot represent "
     "(--format json takes dicts with string keys, lists, strings, finite numbers, booleans and None)"),
])
def test_a_value_json_cannot_hold_is_refused_in_one_line_before_anything_is_staged(kit, source, message):
    base = {"global_config": "def global_config(): return 1", "parameters": "def parameters(): return [1, 2]"}
    name = source.split("def ")[1].split("(")[0]
    base[name] = source
    kit.write_task("\n".join(base.values()) + "\ndef task(c, p): return p\ndef aggregate(r): return r\n")
    done = kit.run("--run", "refused", "--format", "json", "--quiet")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [message]
    folder = kit.run_dir("refused")
    assert not folder.exists() or not any(folder.iterdir())


def test_a_result_json_cannot_hold_fails_that_task_with_its_type(kit):
    kit.write_task("""
        import numpy
        def global_config(): return None
        def parameters(): return [0, 1]
        def task(global_config, parameters): return numpy.int64(parameters) if parameters else parameters
        def aggregate(results): return results
    """)
    done = kit.run("--run", "bad-result", "--format", "json", "--quiet")
    assert done.returncode == 1
    assert "1 of 2 tasks failed (first: task 1, exit code 1)" in done.stderr
    assert "TypeError: Object of type int64 is not JSON serializable" in done.stderr
    assert not (kit.run_dir("bad-result") / "task_1_output.json").exists()


def test_a_resumed_json_run_keeps_its_format_and_refuses_another(kit):
    kit.write_task(PLAIN_TASK)
    first = kit.run("--run", "kept", "--format", "json", "--quiet")
    assert first.returncode == 0, first.stderr
    folder = kit.run_dir("kept")
    (folder / "task_2_output.json").unlink()

    resumed = kit.run("--run", "kept", "--quiet")  # no --format: the run's own
    assert resumed.returncode == 0, resumed.stderr
    assert last_line(resumed.stdout) == plain_loop(kit.path)
    assert (folder / "task_2_output.json").exists() and not list(folder.glob("*.pickle"))
    assert json.loads((folder / "run.json").read_text())["format"] == "json"

    other = kit.run("--run", "kept", "--format", "pickle", "--quiet")
    assert other.returncode == 1
    assert other.stderr.strip().splitlines() == [
        "error: run 'kept' was staged in the json format and a run keeps its format; rerun it without --format pickle, or choose a new --run"]


def test_task_command_runs_in_each_tasks_working_directory_and_its_failure_is_reported(kit):
    kit.write_task("""
        def global_config(): return {}
        def parameters(): return [1, 2, 3]
        def task(global_config, parameters): raise AssertionError("the command runs instead")
        def aggregate(results): return sum(results)
    """)
    done = kit.run("--run", "copy", "--format", "json", "--task-command", "cp resource.json output.json", "--quiet")
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == "6"

    failing = kit.run("--run", "failing", "--format", "json", "--task-command", "sh -c 'echo broken here >&2; exit 3'", "--quiet")
    assert failing.returncode == 1
    assert "3 of 3 tasks failed (first: task 0, exit code 3)" in failing.stderr
    assert "  task 0 exited with code 3; last lines of its stderr:\n    broken here" in failing.stderr


def test_the_r_example_gives_the_aggregate_of_its_task_in_python(r_kit):
    needs_r()
    done = r_kit.run("--run", "in-r")  # `python controller.py` alone: task.py names the worker and the format
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == reference_aggregate()
    assert json.loads((r_kit.run_dir("in-r") / "run.json").read_text())["format"] == "json"


def test_a_failing_r_task_is_reported_with_its_r_error(r_kit):
    needs_r()
    make_task_3_fail(r_kit)
    done = r_kit.run("--run", "r-fails", "--quiet")
    assert done.returncode == 1
    assert "1 of 8 tasks failed (first: task 3, exit code 1)" in done.stderr
    assert "Error in the R task: no result for the block at 6001" in done.stderr
    assert not (r_kit.run_dir("r-fails") / "task_3_output.json").exists()
    assert (r_kit.run_dir("r-fails") / "task_4_output.json").exists()
