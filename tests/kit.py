"""A temporary copy of the kit, driven through its real command line."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import joblib

REPO = Path(__file__).resolve().parent.parent
KIT_FILES = ["constants.py", "worker.py", "task.py", "controller.py", "Dockerfile", ".dockerignore",
             "requirements.txt", "requirements-worker.txt"]


class Kit:
    def __init__(self, path: Path):
        self.path = path
        for name in KIT_FILES:
            if (REPO / name).exists():
                shutil.copy(REPO / name, path / name)
        shutil.copytree(REPO / "superbatch", path / "superbatch", ignore=shutil.ignore_patterns("__pycache__"))

    def write_task(self, source: str) -> None:
        (self.path / "task.py").write_text(textwrap.dedent(source))

    def command(self, *args) -> list:
        return [sys.executable, str(self.path / "controller.py"), *map(str, args)]

    def run(self, *args, env=None, timeout=300) -> subprocess.CompletedProcess:
        environment = {**os.environ, **(env or {})}
        return subprocess.run(self.command(*args), cwd=self.path, capture_output=True, text=True, timeout=timeout, env=environment)

    def run_dir(self, name: str) -> Path:
        return self.path / "runs" / name

    def outputs(self, name: str) -> dict:
        """Task index -> result, for the outputs that are home."""
        found = {}
        for path in self.run_dir(name).glob("task_*_output.pickle"):
            found[int(path.name.split("_")[1])] = joblib.load(path)
        return found


# The for-loop the kit replaces, as its last line prints it: cli.py prints the
# aggregate with print(). A fresh interpreter, so the task.py of the kit copy is
# imported as a user would import it, untouched by this test process's imports.
PLAIN_LOOP = """
import pickle, sys
import task
config = task.global_config()
results = [task.task(config, parameters) for parameters in task.parameters()]
if len(sys.argv) > 1:
    with open(sys.argv[1], "wb") as file:
        pickle.dump(results, file)
print(task.aggregate(results))
"""


def plain_loop(kit_path: Path, results_file: Path = None) -> str:
    """What `task.aggregate([task.task(config, p) for p in task.parameters()])`
    prints for the task.py in kit_path: the truth every backend must match.
    With results_file, the list of results is also pickled there."""
    extra = [str(results_file)] if results_file else []
    done = subprocess.run([sys.executable, "-B", "-c", PLAIN_LOOP, *extra], cwd=kit_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"the plain loop failed: {done.stderr}"
    return last_line(done.stdout)


def plain_results(kit_path: Path, scratch: Path) -> list:
    """The plain loop's task results, in task order."""
    path = scratch / "plain-loop-results.pickle"
    plain_loop(kit_path, path)
    return joblib.load(path)


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""
