"""Runs one task in the current working directory.

The directory holds the shared config and this task's parameters (names in
constants.py), as pickles, or as JSON for a run with --format json: the
files that are there say which. The worker loads both, calls task.task()
and writes the result next to them in the same format. A task that raises
leaves no output file: the traceback goes to stderr and the exit code is 1.

`python worker.py` is what each task runs in the worker image and on Azure
Batch; run_task() is the same thing as a function, for a backend that runs
many tasks in one long-lived process.
"""

import json
import os
import sys
import traceback

import joblib

from constants import (GLOBAL_CONFIG_FILE, GLOBAL_CONFIG_JSON_FILE, TASK_OUTPUT_FILE, TASK_OUTPUT_JSON_FILE,
                       TASK_RESOURCE_FILE, TASK_RESOURCE_JSON_FILE)


def load_json(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def dump_json(value, path):
    # NaN and Infinity are not JSON: refused here, as staging refuses them
    with open(path, "w", encoding="utf-8") as file:
        json.dump(value, file, ensure_ascii=False, allow_nan=False)


def run_task(workdir="."):
    """Run the task whose inputs are in `workdir`; leave its output there."""
    from task import task  # imported here so a broken task.py is reported like a failing task

    if os.path.exists(os.path.join(workdir, GLOBAL_CONFIG_JSON_FILE)):  # a --format json run
        load, dump, names = load_json, dump_json, (GLOBAL_CONFIG_JSON_FILE, TASK_RESOURCE_JSON_FILE, TASK_OUTPUT_JSON_FILE)
    else:
        load, dump, names = joblib.load, joblib.dump, (GLOBAL_CONFIG_FILE, TASK_RESOURCE_FILE, TASK_OUTPUT_FILE)
    global_config = load(os.path.join(workdir, names[0]))
    parameters = load(os.path.join(workdir, names[1]))
    result = task(global_config, parameters)

    # Write under a temporary name first, so that the output either holds a
    # whole result or does not exist (a result that cannot be written included).
    output = os.path.join(workdir, names[2])
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
