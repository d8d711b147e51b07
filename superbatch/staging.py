"""Staging: writing task.py's global config and parameters into the run folder
(pickles, or JSON with --format json: superbatch/formats.py).

Each input is written once. Its content hash goes into the journal, so that a
resumed run can tell whether task.py still defines the same tasks: if it does
not, the run is refused unless --restage, which stages the new inputs and
discards the outputs they invalidate.
"""

import hashlib
import os
from pathlib import Path
from typing import Iterable

from .errors import SuperbatchError
from .formats import DEFAULT_FORMAT, encode
from .runs import RunFolder
from .taskdef import TaskDefinition


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def task_parameters(definition: TaskDefinition) -> Iterable:
    """parameters(), checked to be a non-string iterable."""
    try:
        items = definition.parameters()
    except Exception as error:
        raise SuperbatchError(f"task.py: parameters() raised {type(error).__name__}: {error}") from None
    if isinstance(items, (str, bytes, dict)):
        raise SuperbatchError(f"task.py: parameters() returned a {type(items).__name__}; return a list (or any iterable) with one item per task")
    try:
        return iter(items)
    except TypeError:
        raise SuperbatchError(f"task.py: parameters() returned a {type(items).__name__}, which is not iterable; return a list with one item per task") from None


def choose_format(run: RunFolder, requested) -> str:
    """Record the run's file format: a run keeps the one it was staged in."""
    if run.exists:
        if requested and requested != run.format:
            raise SuperbatchError(
                f"run {run.name!r} was staged in the {run.format} format and a run keeps its format; "
                f"rerun it without --format {requested}, or choose a new --run"
            )
    else:
        run.journal["format"] = requested or DEFAULT_FORMAT
    return run.format


class Stager:
    """Stages a run's inputs; refuses or restages when they changed."""

    def __init__(self, run: RunFolder, restage: bool = False, max_input_bytes: int = 2**62):
        self.run = run
        self.restage = restage
        self.max_input_bytes = max_input_bytes
        self.previous = run.journal.get("inputs") or None  # hashes staged before, if any
        self.restaged: list[int] = []  # tasks whose inputs changed (with --restage)
        self.all_changed = False

    def stage(self, definition: TaskDefinition) -> int:
        """Stage every input; returns the number of tasks."""
        self.run.path.mkdir(parents=True, exist_ok=True)
        try:
            config = definition.global_config()
        except Exception as error:
            raise SuperbatchError(f"task.py: global_config() raised {type(error).__name__}: {error}") from None
        format = self.run.format
        config_data = encode(config, format, "the global config")
        encoded = (encode(item, format, f"task {index}'s parameters") for index, item in enumerate(task_parameters(definition)))
        if format == "json":
            encoded = iter(list(encoded))  # every value checked before anything is written
        config_hash = content_hash(config_data)
        if self.previous and self.previous["config"] != config_hash:
            self._changed("the global config")
            self.all_changed = True
            for output in self.run.path.glob(self.run.files.local_output.format("*")):
                output.unlink()  # every result depended on the old config
        self._write(self.run.config_path, config_data, config_hash, self.previous and self.previous["config"])

        before = self.previous["tasks"] if self.previous else []
        hashes = []
        for index, data in enumerate(encoded):
            if len(data) > self.max_input_bytes:
                raise SuperbatchError(
                    f"task {index}'s parameters are {len(data) / 2**20:.1f} MB {'as JSON' if format == 'json' else 'pickled'}, over the {self.max_input_bytes / 2**20:g} MB limit "
                    f"(--max-input-mb); pass large data shared by all tasks through global_config(), or raise the limit"
                )
            digest = content_hash(data)
            old = before[index] if index < len(before) else None
            if self.previous and old != digest:
                self._changed(f"task {index}'s parameters")
                self.restaged.append(index)
                self.run.output_path(index).unlink(missing_ok=True)
            self._write(self.run.resource_path(index), data, digest, old)
            hashes.append(digest)
        if not hashes:
            raise SuperbatchError("task.py: parameters() returned no items; there is nothing to run")
        if self.previous and len(before) > len(hashes):
            self._changed(f"the number of tasks ({len(before)} staged, {len(hashes)} now)")
            for index in range(len(hashes), len(before)):
                self.run.resource_path(index).unlink(missing_ok=True)
                self.run.output_path(index).unlink(missing_ok=True)

        if self.all_changed:
            self.restaged = list(range(len(hashes)))
        self.run.journal["inputs"] = {"config": config_hash, "tasks": hashes}
        self.run.save()
        return len(hashes)

    def _changed(self, what: str) -> None:
        if not self.restage:
            raise SuperbatchError(
                f"run {self.run.name!r} was staged from a different task.py ({what} changed); "
                f"rerun with --restage to stage the new inputs and rerun the tasks they change, or choose a new --run"
            )
        if self.run.journal.get("inputs"):
            # From here on the folder no longer matches the old hashes: drop them
            # first, so a crash midway cannot pass the half-restaged run as old.
            self.run.journal["inputs"] = None
            self.run.journal["generation"] = self.run.journal.get("generation", 0) + 1
            self.run.save()

    def _write(self, path: Path, data: bytes, digest: str, staged_digest) -> None:
        if staged_digest == digest and path.exists() and path.stat().st_size == len(data) and path.read_bytes() == data:
            return  # already staged with this content (checked: the folder may have been edited)
        write_atomically(path, data)
