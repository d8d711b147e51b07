"""worker.py, as Batch runs it (`python worker.py` in the task's working directory)."""

import shutil
import subprocess
import sys

import joblib

from constants import GLOBAL_CONFIG_FILE, TASK_OUTPUT_FILE, TASK_RESOURCE_FILE


def run_worker(kit, workdir, config, parameters):
    joblib.dump(config, workdir / GLOBAL_CONFIG_FILE)
    joblib.dump(parameters, workdir / TASK_RESOURCE_FILE)
    return subprocess.run([sys.executable, str(kit.path / "worker.py")], cwd=workdir, capture_output=True, text=True)


def test_worker_runs_the_task_in_its_working_directory(kit, tmp_path):
    kit.write_task("""
        def global_config(): return None
        def parameters(): return []
        def task(config, parameters): return {"sum": config["base"] + parameters}
        def aggregate(results): return results
    """)
    workdir = tmp_path / "work"
    workdir.mkdir()
    done = run_worker(kit, workdir, {"base": 40}, 2)
    assert done.returncode == 0, done.stderr
    assert joblib.load(workdir / TASK_OUTPUT_FILE) == {"sum": 42}


def test_a_task_that_raises_leaves_no_output_and_exits_non_zero(kit, tmp_path):
    kit.write_task("""
        def global_config(): return None
        def parameters(): return []
        def task(config, parameters): raise ValueError("bad seed " + str(parameters))
        def aggregate(results): return results
    """)
    workdir = tmp_path / "work"
    workdir.mkdir()
    done = run_worker(kit, workdir, None, 7)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "ValueError: bad seed 7" in done.stderr
    assert not (workdir / TASK_OUTPUT_FILE).exists()


def test_a_result_that_cannot_be_pickled_leaves_no_output(kit, tmp_path):
    kit.write_task("""
        import threading
        def global_config(): return None
        def parameters(): return []
        def task(config, parameters): return threading.Lock()
        def aggregate(results): return results
    """)
    workdir = tmp_path / "work"
    workdir.mkdir()
    done = run_worker(kit, workdir, None, 1)
    assert done.returncode == 1
    assert "lock" in done.stderr.lower()
    assert sorted(p.name for p in workdir.iterdir()) == [GLOBAL_CONFIG_FILE, TASK_RESOURCE_FILE]


def test_run_task_gives_the_same_output_as_the_worker_process(kit, tmp_path):
    """The in-process entry point that long-lived pool processes use."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert run_worker(kit, a, {"power": 3, "size": (10,)}, {"seed": 12}).returncode == 0
    shutil.copy(a / GLOBAL_CONFIG_FILE, b)
    shutil.copy(a / TASK_RESOURCE_FILE, b)
    code = f"import sys; sys.path.insert(0, {str(kit.path)!r}); import worker; worker.run_task({str(b)!r})"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    assert joblib.load(a / TASK_OUTPUT_FILE) == joblib.load(b / TASK_OUTPUT_FILE)
