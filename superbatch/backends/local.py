"""The local backend: a pool of long-lived worker processes on this machine.

Each task gets its own working directory (runs/<run>/work/task_<i>/) holding
the two input files, exactly as on Batch; a pool process runs worker.run_task
there, with stdout and stderr captured into stdout.txt and stderr.txt, and
renames the output into runs/<run>/ the moment the task ends. The pool is
joblib's (loky), which batches tiny tasks so they do not pay a round trip each.

A task that kills its process (a segfault, os._exit, the out-of-memory killer)
breaks the pool; the tasks that had not ended then run one `python worker.py`
process each, so that the culprit gets its own exit code and stderr.

With --task-timeout, a timer in the pool process kills that process (SIGKILL:
nothing a task does can outlive it) once its task runs over time, after
leaving a mark in the task's working directory; the broken pool then reports
that task as timed out and runs the others as above, each process killed at
the same limit.

A worker of another kind (task.py's WORKER, or --task-command) runs as its
own process per task in the task's working directory, --workers at once.
"""

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Iterator, Optional, Sequence

import joblib
from joblib.externals.loky.process_executor import TerminatedWorkerError

from ..formats import FILES, Files
from .base import Backend, TaskEnd, span, tail, timed_out_text

TIMED_OUT_MARK = ".superbatch-timed-out"  # left in a task's working directory by the timer that killed it


class LocalBackend(Backend):
    name = "local"

    def submit(self, indices: Sequence[int]) -> None:
        self.queue = list(indices)

    def follow(self) -> Iterator[Optional[TaskEnd]]:
        run_dir, kit_dir, retries = str(self.run.path), str(self.kit_dir), self.options.retries
        timeout = getattr(self.options, "task_timeout", None)
        files = self.run.files
        command = self.task_command(kit_dir)
        if command:  # not worker.py: a process per task, as on Batch
            with ThreadPoolExecutor(self.options.workers, thread_name_prefix="task") as pool:
                futures = [pool.submit(run_in_subprocess, run_dir, command, index, retries, timeout, files) for index in self.queue]
                for future in as_completed(futures):
                    yield future.result()
            return
        command = [sys.executable, os.path.join(kit_dir, "worker.py")]
        if timeout and self.options.workers == 1:
            # joblib runs one worker in this very process, which the timer must not kill
            for index in self.queue:
                yield run_in_subprocess(run_dir, command, index, retries, timeout, files)
            return
        ended = set()
        calls = (joblib.delayed(run_in_pool)(run_dir, kit_dir, index, retries, timeout, files) for index in self.queue)
        try:
            parallel = joblib.Parallel(n_jobs=self.options.workers, return_as="generator_unordered")
            for end in parallel(calls):
                ended.add(end.index)
                yield end
        except TerminatedWorkerError:
            for index in self.queue:
                if index in ended:
                    continue
                if (self.run.path / "work" / f"task_{index}" / TIMED_OUT_MARK).exists():
                    yield timed_out(self.run.path, index, timeout)
                else:
                    yield run_in_subprocess(run_dir, command, index, retries, timeout, files)

    def fetch(self, index: int, destination: Path) -> None:
        pass  # the pool process already renamed the output into the run folder


# --- what runs in the pool processes ---------------------------------------


def run_in_pool(run_dir: str, kit_dir: str, index: int, retries: int, timeout: Optional[float] = None,
                files: Files = FILES["pickle"]) -> TaskEnd:
    """Run one task in this (long-lived) process, retrying it if it fails."""
    if kit_dir not in sys.path:
        sys.path.insert(0, kit_dir)
    import worker

    workdir = prepare_workdir(Path(run_dir), index, files)
    spans, where = [], f"process {os.getpid()}"
    with killed_after(timeout, workdir):  # the limit covers the task, retries included, as maxWallClockTime does on Batch
        for attempt in range(1, retries + 2):
            started = time.time()
            with captured_output(workdir):
                exit_code = _call_worker(worker.run_task, workdir)
            spans.append(span(started, time.time(), where, "succeeded" if exit_code == 0 else "failed"))
            if exit_code == 0:
                break
    return with_spans(finish(Path(run_dir), workdir, index, exit_code, attempt, files), spans)


def run_in_subprocess(run_dir: str, command: list, index: int, retries: int, timeout: Optional[float] = None,
                      files: Files = FILES["pickle"]) -> TaskEnd:
    """Run one task as its own process (`python worker.py` or another worker), as Batch would."""
    workdir = prepare_workdir(Path(run_dir), index, files)
    deadline = time.monotonic() + timeout if timeout else None
    # a lane per thread of follow()'s pool; the fallbacks after a broken pool run one after the other
    thread = threading.current_thread().name
    spans, where = [], f"slot {thread.rsplit('_', 1)[-1]}" if thread.startswith("task_") else "a process per task"
    for attempt in range(1, retries + 2):
        started = time.time()
        with open(workdir / "stdout.txt", "wb") as out, open(workdir / "stderr.txt", "wb") as err:
            try:
                left = max(0.0, deadline - time.monotonic()) if deadline else None
                exit_code = subprocess.run(command, cwd=workdir, stdout=out, stderr=err, timeout=left).returncode
            except subprocess.TimeoutExpired:  # subprocess.run has killed it
                spans.append(span(started, time.time(), where, "timed out"))
                return with_spans(timed_out(Path(run_dir), index, timeout, attempt), spans)
            except OSError as error:  # no such program: reported as the task's failure, like a missing `python`
                err.write(f"cannot run {shlex.join(command)}: {error.strerror or error}\n".encode())
                exit_code = 127
        spans.append(span(started, time.time(), where, "succeeded" if exit_code == 0 else "failed"))
        if exit_code == 0:
            break
    return with_spans(finish(Path(run_dir), workdir, index, exit_code, attempt, files), spans)


def with_spans(end: TaskEnd, spans: list) -> TaskEnd:
    """Attach the attempts' spans; the last one ends as the task did (finish() may
    fail a task that exited 0 without an output), the ones before were retried."""
    for earlier in spans[:-1]:
        earlier["outcome"] = "retried"  # it failed, and the task was tried again
    if spans:
        spans[-1]["outcome"] = end.outcome
    end.spans = spans
    return end


@contextlib.contextmanager
def killed_after(timeout: Optional[float], workdir: Path):
    """Kill this process if the block runs longer than timeout seconds."""
    if not timeout:
        yield
        return

    def kill() -> None:
        # when and where, for the report: this process is gone before it can say
        (workdir / TIMED_OUT_MARK).write_text(f"{os.getpid()} {time.time()}")
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def timed_out(run_dir: Path, index: int, timeout: float, attempts: int = 1) -> TaskEnd:
    """The end of a task killed at --task-timeout: its stderr so far is kept as its log."""
    workdir = run_dir / "work" / f"task_{index}"
    spans = []
    try:  # killed in a pool process: its mark says which and when (the limit counts from the task's start)
        pid, killed = (workdir / TIMED_OUT_MARK).read_text().split()
        spans.append(span(float(killed) - timeout, float(killed), f"process {pid}", "timed out"))
    except (OSError, ValueError):
        pass
    stderr_path = workdir / "stderr.txt"
    stderr = stderr_path.read_text(errors="replace") if stderr_path.exists() else ""
    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    (logs / f"task_{index}_stderr.txt").write_text(stderr)
    shutil.rmtree(workdir, ignore_errors=True)
    return TaskEnd(index, False, None, stderr_tail=tail(stderr), failure_info=timed_out_text(timeout),
                   attempts=attempts, timed_out=True, spans=spans)


def _call_worker(run_task, workdir: Path) -> int:
    """worker.py's main(), as a function: the exit code it would have had."""
    try:
        run_task(str(workdir))
        return 0
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    except Exception:
        traceback.print_exc()
        return 1


def prepare_workdir(run_dir: Path, index: int, files: Files = FILES["pickle"]) -> Path:
    """A fresh working directory holding the task's two input files."""
    workdir = run_dir / "work" / f"task_{index}"
    if workdir.exists():
        shutil.rmtree(workdir)  # left over by a run that was killed
    workdir.mkdir(parents=True)
    _link(run_dir / files.config, workdir / files.config)
    _link(run_dir / files.local_resource.format(index), workdir / files.resource)
    return workdir


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # instant, and no extra disk for a large config
    except OSError:
        shutil.copyfile(source, target)


def finish(run_dir: Path, workdir: Path, index: int, exit_code: int, attempts: int, files: Files = FILES["pickle"]) -> TaskEnd:
    """Move the output home (or keep the failure's stderr) and clear the working directory."""
    output = workdir / files.output
    if exit_code == 0 and output.exists():
        os.replace(output, run_dir / files.local_output.format(index))
        end = TaskEnd(index, True, 0, attempts=attempts)
    else:
        stderr = (workdir / "stderr.txt").read_text(errors="replace")
        if exit_code == 0:  # exited cleanly but left nothing: still a failure
            exit_code, stderr = 1, stderr + f"\nthe task exited with code 0 but wrote no {files.output}"
        logs = run_dir / "logs"
        logs.mkdir(exist_ok=True)
        (logs / f"task_{index}_stderr.txt").write_text(stderr)
        end = TaskEnd(index, False, exit_code, stderr_tail=tail(stderr), attempts=attempts)
    shutil.rmtree(workdir, ignore_errors=True)
    return end


@contextlib.contextmanager
def captured_output(workdir: Path):
    """Send this process's stdout and stderr (file descriptors 1 and 2, so
    that C extensions and child processes are captured too) to the task's
    stdout.txt and stderr.txt, as Batch does, then restore them."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    for fd, name in ((1, "stdout.txt"), (2, "stderr.txt")):
        file = os.open(workdir / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(file, fd)
        os.close(file)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, original in zip((1, 2), saved):
            os.dup2(original, fd)
            os.close(original)
