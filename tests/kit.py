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


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""
