"""Runs one task in the current working directory.

The directory holds the shared config and this task's parameters (names in
constants.py), as pickles, or as JSON for a run with --format json: the
files that are there say which. The worker loads both, calls task.task()
and writes the result next to them in the same format. A task that raises
leaves no output file: the traceback goes to stderr and the exit code is 1.

`python worker.py` is what each task runs in the worker image and on Azure
Batch; run_task() is the same thing as a function, for a backend that runs
many tasks in one long-lived process.

A chunk (--chunk) is several iterations in one working directory: its
parameters file holds {"superbatch_chunk": [[index, parameters], ...]}. The
worker calls task() once per iteration and writes each result, as it
finishes, to task_<index>_output.pickle (.json), or, when the iteration
raises, its traceback to task_<index>_error.txt; one failing iteration does
not stop the others, and the exit code is 0 once every iteration was tried.
"""

import contextlib
import io
import json
import os
import sys
import traceback

import joblib

from constants import (CHUNK_ERROR_PATTERN, CHUNK_KEY, GLOBAL_CONFIG_FILE, GLOBAL_CONFIG_JSON_FILE, LOCAL_OUTPUT_JSON_PATTERN,
                       LOCAL_OUTPUT_PATTERN, TASK_OUTPUT_FILE, TASK_OUTPUT_JSON_FILE, TASK_RESOURCE_FILE, TASK_RESOURCE_JSON_FILE)


def load_json(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def dump_json(value, path):
    # NaN and Infinity are not JSON: refused here, as staging refuses them
    with open(path, "w", encoding="utf-8") as file:
        json.dump(value, file, ensure_ascii=False, allow_nan=False)


def _format(workdir):
    """load, dump and the file names (config, resource, output, per-iteration output) of the run's format."""
    if os.path.exists(os.path.join(workdir, GLOBAL_CONFIG_JSON_FILE)):  # a --format json run
        return load_json, dump_json, (GLOBAL_CONFIG_JSON_FILE, TASK_RESOURCE_JSON_FILE, TASK_OUTPUT_JSON_FILE, LOCAL_OUTPUT_JSON_PATTERN)
    return joblib.load, joblib.dump, (GLOBAL_CONFIG_FILE, TASK_RESOURCE_FILE, TASK_OUTPUT_FILE, LOCAL_OUTPUT_PATTERN)


def run_task(workdir=".", on_iteration=None):
    """Run the task (or chunk) whose inputs are in `workdir`; leave its output there.

    on_iteration(index, succeeded) is called after each iteration of a chunk."""
    from task import task  # imported here so a broken task.py is reported like a failing task

    load, dump, names = _format(workdir)
    global_config = load(os.path.join(workdir, names[0]))
    parameters = load(os.path.join(workdir, names[1]))
    if isinstance(parameters, dict) and list(parameters) == [CHUNK_KEY]:
        for index, item in parameters[CHUNK_KEY]:
            kept = Tee(sys.stderr)  # what this iteration prints to stderr, for its own log
            with contextlib.redirect_stderr(kept):
                try:
                    write(dump, task(global_config, item), os.path.join(workdir, names[3].format(index)))
                    succeeded = True
                except (Exception, SystemExit):  # this iteration fails alone, its traceback kept
                    traceback.print_exc()
                    succeeded = False
            if not succeeded:
                with open(os.path.join(workdir, CHUNK_ERROR_PATTERN.format(index)), "w", encoding="utf-8") as file:
                    file.write(kept.text.getvalue())
            if on_iteration:
                on_iteration(index, succeeded)
        return
    write(dump, task(global_config, parameters), os.path.join(workdir, names[2]))


class Tee(io.TextIOBase):
    """A stream that writes through to another and keeps a copy."""

    def __init__(self, stream):
        self.stream, self.text = stream, io.StringIO()

    def write(self, text):
        self.text.write(text)
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()


def write(dump, result, output):
    # Write under a temporary name first, so that the output either holds a
    # whole result or does not exist (a result that cannot be written included).
    partial = output + ".partial"
    try:
        dump(result, partial)
        os.replace(partial, output)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def main():
    try:
        run_task()
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
