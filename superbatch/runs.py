"""The run folder, runs/<name>/, and its journal, run.json.

The folder is the single source of truth of a run:

    runs/<name>/run.json                  the journal (never a secret)
    runs/<name>/config.pickle             the staged global config
    runs/<name>/task_{i}_resource.pickle  task i's staged parameters
    runs/<name>/task_{i}_output.pickle    task i's result, once it is home
    runs/<name>/logs/                     stderr of the tasks that failed

(.json instead of .pickle for a run staged with --format json; the journal
records the format, and a run keeps it.)

An output file only ever appears whole (it is renamed into place), so "task i
is done" is simply "its output file exists": a crash at any moment loses at
most the tasks that were running.
"""

import json
import os
import re
import time
from pathlib import Path

from .errors import SuperbatchError, UsageError
from .formats import DEFAULT_FORMAT, FILES, FORMATS, Files

JOURNAL_FILE = "run.json"
JOURNAL_VERSION = 1

# Run names become parts of Batch job and task ids (at most 64 characters of
# letters, digits, hyphens and underscores) and of blob names. "__" is kept
# for the kit: it separates a run's name from its job number in job ids.
RUN_NAME = re.compile(r"^(?!.*__)[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")


def default_run_name() -> str:
    return time.strftime("run-%Y%m%d-%H%M%S")


def check_run_name(name: str) -> str:
    if not RUN_NAME.match(name):
        raise UsageError(f"--run {name!r}: use 1 to 40 letters, digits, '-' or '_' (not '__'), starting with a letter or digit")
    return name


class RunFolder:
    """One run's folder and journal."""

    def __init__(self, runs_dir: Path, name: str):
        self.name = check_run_name(name)
        self.path = Path(runs_dir) / name
        self.journal = self._read_journal()

    @property
    def exists(self) -> bool:
        return (self.path / JOURNAL_FILE).exists()

    # --- paths of the file contract, on the controller's side -------------

    @property
    def format(self) -> str:
        """pickle or json; journals from before --format are pickle."""
        return self.journal.get("format", DEFAULT_FORMAT)

    @property
    def files(self) -> Files:
        return FILES[self.format]

    @property
    def config_path(self) -> Path:
        return self.path / self.files.config

    def resource_path(self, index: int) -> Path:
        return self.path / self.files.local_resource.format(index)

    def output_path(self, index: int) -> Path:
        return self.path / self.files.local_output.format(index)

    def log_path(self, index: int) -> Path:
        return self.path / "logs" / f"task_{index}_stderr.txt"

    @property
    def work_dir(self) -> Path:
        """Where the local and docker backends make each task's working directory."""
        return self.path / "work"

    def is_home(self, index: int) -> bool:
        return self.output_path(index).exists()

    # --- the journal ------------------------------------------------------

    def _read_journal(self) -> dict:
        path = self.path / JOURNAL_FILE
        if not path.exists():
            return {"version": JOURNAL_VERSION, "run": self.name}
        try:
            journal = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise SuperbatchError(f"{path} is unreadable ({error}); move the run folder away or pick another --run") from None
        if not isinstance(journal, dict) or journal.get("version") != JOURNAL_VERSION:
            raise SuperbatchError(f"{path} is not a journal this version of superbatch knows; pick another --run")
        if journal.get("run") != self.name or not _valid_inputs(journal.get("inputs")) or journal.get("format", DEFAULT_FORMAT) not in FORMATS or not isinstance(journal.get("backends", {}), dict):
            raise SuperbatchError(f"{path} was changed by hand and no longer describes run {self.name!r}; move runs/{self.name}/ away or choose another --run")
        return journal

    def save(self) -> None:
        """Write the journal atomically: a crash leaves the old or the new one."""
        self.path.mkdir(parents=True, exist_ok=True)
        path = self.path / JOURNAL_FILE
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(self.journal, indent=1, sort_keys=True))
        os.replace(partial, path)

    def backend_state(self, backend: str) -> dict:
        """The part of the journal that belongs to one backend (job ids and the like)."""
        return self.journal.setdefault("backends", {}).setdefault(backend, {})


def _valid_inputs(inputs) -> bool:
    """The journal's record of staged inputs: none yet, or a config hash and one hash per task."""
    if inputs is None:
        return True
    return (isinstance(inputs, dict) and isinstance(inputs.get("config"), str)
            and isinstance(inputs.get("tasks"), list) and all(isinstance(digest, str) for digest in inputs["tasks"]))
