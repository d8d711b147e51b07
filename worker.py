"""Runs one task in the current working directory.

The directory holds the shared config and this task's parameters (names in
constants.py). The worker loads both with joblib, calls task.task() and
dumps the result next to them. A task that raises leaves no output file: the
traceback goes to stderr and the exit code is 1.

`python worker.py` is what each task runs in the worker image and on Azure
Batch; run_task() is the same thing as a function, for a backend that runs
many tasks in one long-lived process.
"""

import os
import sys
import traceback

import joblib

from constants import GLOBAL_CONFIG_FILE, TASK_OUTPUT_FILE, TASK_RESOURCE_FILE


def run_task(workdir="."):
    """Run the task whose inputs are in `workdir`; leave its output there."""
    from task import task  # imported here so a broken task.py is reported like a failing task

    global_config = joblib.load(os.path.join(workdir, GLOBAL_CONFIG_FILE))
    parameters = joblib.load(os.path.join(workdir, TASK_RESOURCE_FILE))
    result = task(global_config, parameters)

    # Write under a temporary name first, so that output.pickle either holds a
    # whole result or does not exist (a result that cannot be pickled included).
    output = os.path.join(workdir, TASK_OUTPUT_FILE)
    partial = output + ".partial"
    try:
        joblib.dump(result, partial)
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
