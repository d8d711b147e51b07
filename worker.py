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

On Azure Batch the shared config is fetched once per node by the job's
preparation task, so the worker looks for it in AZ_BATCH_JOB_PREP_WORKING_DIR
when the working directory has none. A chunk there also gets, in its
environment, a blob folder for its files (SUPERBATCH_RESULTS_URL, a container
URL whose SAS can only list, create and write, and SUPERBATCH_RESULTS_PREFIX):
the files of finished iterations (results and tracebacks) go there at least
once a second, in zip archives named by the positions in the chunk they
cover (part-<first>-<end>.zip), and an iteration of a second or more goes
alone as soon as it ends: a node that is preempted loses the iteration it
was running and at most a second of finished ones. A chunk that starts again
skips the positions its parts already cover, and status.json, written last,
tells the controller how each iteration went, when, and in which part.
SUPERBATCH_RETRIES tries a failing iteration again, alone; with
SUPERBATCH_TIME_BOX (a first-wave chunk of --chunk auto) the worker starts no
iteration after that many seconds, and leaves the rest out of status.json.
"""

import contextlib
import io
import json
import os
import sys
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ElementTree
import zipfile

import joblib

from constants import (CHUNK_ERROR_PATTERN, CHUNK_KEY, CHUNK_STATUS_FILE, GLOBAL_CONFIG_FILE, GLOBAL_CONFIG_JSON_FILE, LOCAL_OUTPUT_JSON_PATTERN,
                       LOCAL_OUTPUT_PATTERN, TASK_OUTPUT_FILE, TASK_OUTPUT_JSON_FILE, TASK_RESOURCE_FILE, TASK_RESOURCE_JSON_FILE)


def load_json(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def dump_json(value, path):
    # NaN and Infinity are not JSON: refused here, as staging refuses them
    with open(path, "w", encoding="utf-8") as file:
        json.dump(value, file, ensure_ascii=False, allow_nan=False)


def _format(workdir):
    """load, dump, the config's path and the file names (resource, output, per-iteration output) of the run's format."""
    for folder in (workdir, os.environ.get("AZ_BATCH_JOB_PREP_WORKING_DIR")):
        if folder and os.path.exists(os.path.join(folder, GLOBAL_CONFIG_JSON_FILE)):  # a --format json run
            return load_json, dump_json, os.path.join(folder, GLOBAL_CONFIG_JSON_FILE), (
                TASK_RESOURCE_JSON_FILE, TASK_OUTPUT_JSON_FILE, LOCAL_OUTPUT_JSON_PATTERN)
        if folder and os.path.exists(os.path.join(folder, GLOBAL_CONFIG_FILE)):
            return joblib.load, joblib.dump, os.path.join(folder, GLOBAL_CONFIG_FILE), (
                TASK_RESOURCE_FILE, TASK_OUTPUT_FILE, LOCAL_OUTPUT_PATTERN)
    raise FileNotFoundError(f"no {GLOBAL_CONFIG_FILE} or {GLOBAL_CONFIG_JSON_FILE} in {os.path.abspath(workdir)}"
                            " or in AZ_BATCH_JOB_PREP_WORKING_DIR")


def run_task(workdir=".", on_iteration=None):
    """Run the task (or chunk) whose inputs are in `workdir`; leave its output there.

    on_iteration(index, succeeded) is called after each iteration of a chunk."""
    from task import task  # imported here so a broken task.py is reported like a failing task

    load, dump, config_path, names = _format(workdir)
    global_config = load(config_path)
    parameters = load(os.path.join(workdir, names[0]))
    if not (isinstance(parameters, dict) and list(parameters) == [CHUNK_KEY]):
        write(dump, task(global_config, parameters), os.path.join(workdir, names[1]))
        return
    folder = BlobFolder.from_environment()
    parts = Parts(folder, workdir) if folder else None
    retries = int(os.environ.get("SUPERBATCH_RETRIES", "0"))
    time_box = float(os.environ.get("SUPERBATCH_TIME_BOX", "0"))  # a first-wave chunk stops starting iterations after this
    began = time.monotonic()
    status = {}
    for position, (index, item) in enumerate(parameters[CHUNK_KEY]):
        if time_box and status and time.monotonic() - began >= time_box:
            break  # the rest is not in status.json: the controller sends it again, in chunks sized from these
        output = names[2].format(index)
        if parts and position in parts.earlier:  # finished by an attempt that was preempted
            status[index] = {"earlier": True, "part": parts.earlier[position]}
            continue
        tries = []  # [start, end] of each attempt
        for attempt in range(1, retries + 2):
            start = time.time()
            succeeded, errors = _iteration(task, global_config, item, dump, os.path.join(workdir, output))
            tries.append([start, time.time()])
            if succeeded or attempt > retries:
                break
        status[index] = {"ok": succeeded, "tries": tries}
        if not succeeded:
            with open(os.path.join(workdir, CHUNK_ERROR_PATTERN.format(index)), "w", encoding="utf-8") as file:
                file.write(errors)
        if parts:
            parts.add(position, output if succeeded else CHUNK_ERROR_PATTERN.format(index), status[index])
        if on_iteration:
            on_iteration(index, succeeded)
    if parts:
        parts.flush()
        folder.upload(CHUNK_STATUS_FILE, json.dumps({"node": os.environ.get("AZ_BATCH_NODE_ID"), "iterations": status}).encode())


class Parts:
    """The files of a chunk's finished iterations, sent to its blob folder in
    zip archives: at least once a second, at once for an iteration of a
    second or more, before a part grows past PART_BYTES."""

    SECONDS = 1.0
    PART_BYTES = 64 * 2**20

    def __init__(self, folder, workdir):
        self.folder, self.workdir = folder, workdir
        self.files, self.entries, self.size = [], [], 0
        self.since = time.monotonic()
        self.earlier = {}  # position -> the part that holds it, from an earlier attempt of this chunk
        for name in folder.names():
            if name.startswith("part-") and name.endswith(".zip"):
                first, end = name[len("part-"):-len(".zip")].split("-")
                self.earlier.update((position, name) for position in range(int(first), int(end)))

    def add(self, position, name, entry):
        path = os.path.join(self.workdir, name)
        self.files.append((position, path))
        self.entries.append(entry)
        self.size += os.path.getsize(path)
        if time.monotonic() - self.since >= self.SECONDS or self.size >= self.PART_BYTES:
            self.flush()

    def flush(self):
        if self.files:
            name = f"part-{self.files[0][0]}-{self.files[-1][0] + 1}.zip"
            archive = os.path.join(self.workdir, name)
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as part:  # results are often compressed already
                for _, path in self.files:
                    part.write(path, os.path.basename(path))
            self.folder.upload_file(name, archive)
            for _, path in self.files:
                os.remove(path)  # a chunk of many iterations does not fill the node's disk
            for entry in self.entries:
                entry["part"] = name
        self.files, self.entries, self.size = [], [], 0
        self.since = time.monotonic()


def _iteration(task, global_config, item, dump, output):
    """One iteration of a chunk: (succeeded, what it printed to stderr with its traceback)."""
    kept = Tee(sys.stderr)  # what this iteration prints to stderr, for its own log
    with contextlib.redirect_stderr(kept):
        try:
            write(dump, task(global_config, item), output)
            return True, ""
        except (Exception, SystemExit):  # this iteration fails alone, its traceback kept
            traceback.print_exc()
    return False, kept.text.getvalue()


class BlobFolder:
    """A chunk's folder in blob storage, reached with the SAS URL the
    controller gave the task (plain HTTPS: the worker image needs no SDK)."""

    def __init__(self, container_url, prefix):
        self.container, _, self.sas = container_url.partition("?")
        self.prefix = prefix

    @classmethod
    def from_environment(cls):
        url = os.environ.get("SUPERBATCH_RESULTS_URL")
        return cls(url, os.environ.get("SUPERBATCH_RESULTS_PREFIX", "")) if url else None

    def names(self):
        """The names of the files in the folder (List Blobs, page by page)."""
        found, marker = set(), ""
        while True:
            query = {"restype": "container", "comp": "list", "prefix": self.prefix}
            if marker:
                query["marker"] = marker
            body = self._request("GET", f"{self.container}?{urllib.parse.urlencode(query)}&{self.sas}")
            root = ElementTree.fromstring(body)
            found.update(name.text[len(self.prefix):] for name in root.iter("Name"))
            marker = root.findtext("NextMarker") or ""
            if not marker:
                return found

    def upload_file(self, name, path):
        with open(path, "rb") as file:
            self.upload(name, file.read())
        os.remove(path)

    def upload(self, name, data):
        """Put Blob: the whole file in one request."""
        url = f"{self.container}/{urllib.parse.quote(self.prefix + name)}?{self.sas}"
        self._request("PUT", url, data, {"x-ms-blob-type": "BlockBlob", "Content-Length": str(len(data))})

    @staticmethod
    def _request(method, url, data=None, headers=None, attempts=5):
        for attempt in range(attempts):  # the service may throttle or blink: back off and try again
            try:
                with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=headers or {}),
                                            timeout=120) as answer:
                    return answer.read()
            except urllib.error.HTTPError as error:
                if error.code < 500 and error.code != 429 or attempt == attempts - 1:
                    # the URL carries a SAS: say what failed without it
                    raise RuntimeError(f"{method} of a chunk's file in blob storage failed: HTTP {error.code} {error.reason}") from None
            except OSError as error:
                if attempt == attempts - 1:
                    raise RuntimeError(f"{method} of a chunk's file in blob storage failed: {type(error).__name__}") from None
            time.sleep(min(30, 2 ** attempt))


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
