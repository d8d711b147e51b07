"""Every user error is one line on stderr, a non-zero exit and no traceback."""

import pytest

GOOD = {
    "global_config": "def global_config(): return {'power': 2}",
    "parameters": "def parameters(): return [1, 2, 3]",
    "task": "def task(config, p): return p ** config['power']",
    "aggregate": "def aggregate(results): return sum(results)",
}


def task_source(**replace) -> str:
    parts = {**GOOD, **replace}
    return "\n".join(part for part in parts.values() if part) + "\n"


def assert_one_line_error(done, *expected, exit_code=1):
    assert done.returncode == exit_code, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    for text in expected:
        assert text in errors[0], errors[0]
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("missing", list(GOOD))
def test_task_py_lacking_one_of_its_four_functions(kit, missing):
    kit.write_task(task_source(**{missing: ""}))
    assert_one_line_error(kit.run("--run", "r"), f"task.py does not define {missing}()")


@pytest.mark.parametrize("source, expected", [
    (task_source(parameters="def parameters(): return 5"), "parameters() returned a int, which is not iterable"),
    (task_source(parameters="def parameters(): return []"), "parameters() returned no items"),
    (task_source(parameters="def parameters(): return 'abc'"), "parameters() returned a str"),
    (task_source(parameters="def parameters(): return [1, 2, lambda x: x]"), "task 2's parameters cannot be pickled"),
    (task_source(global_config="import threading\ndef global_config(): return threading.Lock()"), "the global config cannot be pickled"),
    (task_source(task="def task(config): return 1"), "task.py: task(config) must take two arguments"),
    (task_source(parameters="def parameters(:\n    return [1]"), "task.py has a syntax error at line"),
    (task_source(global_config="import not_a_module_anywhere\ndef global_config(): return 1"), "task.py failed to import: ModuleNotFoundError"),
    (task_source(parameters="def parameters(): raise ValueError('no data')"), "parameters() raised ValueError: no data"),
    (task_source(aggregate="def aggregate(results): return results[10]"), "aggregate() raised IndexError"),
])
def test_bad_task_definitions(kit, source, expected):
    kit.write_task(source)
    assert_one_line_error(kit.run("--run", "r"), expected)


@pytest.mark.parametrize("flags, expected", [
    (["--workers", "0"], "argument --workers: must be at least 1, not 0"),
    (["--workers", "-3"], "argument --workers: must be at least 1, not -3"),
    (["--workers", "many"], "argument --workers: must be a whole number, not 'many'"),
    (["--retries", "-1"], "argument --retries: must be 0 or more, not -1"),
    (["--run", "bad name!"], "argument --run: use 1 to 40 letters, digits"),
    (["--backend", "slurm"], "argument --backend: invalid choice: 'slurm'"),
])
def test_bad_flags(kit, flags, expected):
    assert_one_line_error(kit.run(*flags), expected, exit_code=2)


def test_debug_shows_the_traceback(kit):
    kit.write_task(task_source(parameters="def parameters(): return 5"))
    done = kit.run("--run", "r", "--debug")
    assert done.returncode == 1 and "Traceback" in done.stderr


def test_a_run_whose_inputs_changed_is_refused_unless_restaged(kit, tmp_path):
    log = tmp_path / "ran.log"
    body = f"""
def global_config(): return 100
def parameters(): return PARAMS
def task(config, p):
    with open({str(log)!r}, "a") as file:
        file.write(f"{{p}}\\n")
    return config + p
def aggregate(results): return sum(results)
"""
    kit.write_task("PARAMS = [1, 2, 3]\n" + body)
    assert kit.run("--run", "same").returncode == 0
    kit.write_task("PARAMS = [1, 20, 3]\n" + body)
    refused = kit.run("--run", "same")
    assert_one_line_error(refused, "run 'same' was staged from a different task.py (task 1's parameters changed)", "--restage")
    assert sorted(log.read_text().split()) == ["1", "2", "3"]  # nothing ran (tasks run in parallel: order varies)

    restaged = kit.run("--run", "same", "--restage")
    assert restaged.returncode == 0, restaged.stderr
    assert restaged.stdout.strip() == str(101 + 120 + 103)
    assert sorted(log.read_text().split(), key=int) == ["1", "2", "3", "20"]  # only the changed task ran again

    kit.write_task("PARAMS = [1, 20]\n" + body)
    assert_one_line_error(kit.run("--run", "same"), "the number of tasks (3 staged, 2 now)")
