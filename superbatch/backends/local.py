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

With --chunk (auto by default here, unless --task-timeout), each pool call
runs a chunk of iterations in one working directory (runs/<run>/work/chunk_<i>/):
worker.run_task calls task() once per iteration and each result is renamed
into runs/<run>/ the moment it is written, so a killed run loses only the
iterations that had not finished; a failing iteration fails alone, its
traceback its log, and is retried alone.

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

from .. import chunks
from ..chunks import ChunkSizer, chunk_resource
from ..formats import FILES, Files
from .base import Backend, TaskEnd, span, tail, timed_out_text

TIMED_OUT_MARK = ".superbatch-timed-out"  # left in a task's working directory by the timer that killed it
CHUNK_SECONDS = 0.5  # auto: a pool call's own cost is milliseconds; half a second makes it small


class LocalBackend(Backend):
    name = "local"

    def check(self) -> None:
        self.chunk_setting = chunks.resolve(getattr(self.options, "chunk", None), bool(self.task_command(str(self.kit_dir))),
                                            getattr(self.options, "task_timeout", None))

    def chunk(self):
        """Iterations per pool call: --chunk, else auto (1 where a task must be one iteration)."""
        return self.chunk_setting

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
        try:
            if self.chunk() == 1:
                calls = (joblib.delayed(run_in_pool)(run_dir, kit_dir, index, retries, timeout, files) for index in self.queue)
                parallel = joblib.Parallel(n_jobs=self.options.workers, return_as="generator_unordered")
                for end in parallel(calls):
                    ended.add(end.index)
                    yield end
            else:
                yield from self._chunks(ended)
        except TerminatedWorkerError:
            for index in self.queue:
                if index in ended:
                    continue
                if self.run.is_home(index):  # finished in a chunk before the pool broke
                    yield TaskEnd(index, True, 0)
                    continue
                if (self.run.path / "work" / f"task_{index}" / TIMED_OUT_MARK).exists():
                    yield timed_out(self.run.path, index, timeout)
                else:
                    yield run_in_subprocess(run_dir, command, index, retries, timeout, files)

    def _chunks(self, ended: set) -> Iterator[TaskEnd]:
        """The queue as chunks, each sized when joblib asks for the next call."""
        run_dir, kit_dir, files = str(self.run.path), str(self.kit_dir), self.run.files
        sizer = ChunkSizer(self.chunk(), self.options.workers, CHUNK_SECONDS)
        left = list(reversed(self.queue))

        def calls():
            while left:
                part = [left.pop() for _ in range(sizer.next(len(left)))]
                yield joblib.delayed(run_chunk_in_pool)(run_dir, kit_dir, part, self.options.retries, files)

        # batch_size=1: the chunks are already sized; joblib must not group them again
        parallel = joblib.Parallel(n_jobs=self.options.workers, return_as="generator_unordered", batch_size=1)
        for ends in parallel(calls()):
            for end in ends:
                for attempt in end.spans:
                    sizer.observe(attempt["end"] - attempt["start"])
                ended.add(end.index)
                yield end

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


def run_chunk_in_pool(run_dir: str, kit_dir: str, indices: list, retries: int, files: Files = FILES["pickle"]) -> list:
    """Run a chunk of iterations in this process; each result goes home as it is written,
    each failed iteration is tried again alone (--retries)."""
    if kit_dir not in sys.path:
        sys.path.insert(0, kit_dir)
    import worker

    home = Path(run_dir)
    workdir = home / "work" / f"chunk_{indices[0]}"
    where, ends, spans, errors = f"process {os.getpid()}", {}, {index: [] for index in indices}, {}
    todo = list(indices)
    for attempt in range(1, retries + 2):
        prepare_chunk(home, workdir, todo, files, fresh=attempt == 1)
        clock, tried, logged = [time.time()], set(), [0]

        def on_iteration(index: int, succeeded: bool) -> None:
            now = time.time()
            tried.add(index)
            sys.stdout.flush()
            sys.stderr.flush()
            written = os.lseek(2, 0, os.SEEK_CUR)  # this iteration's stderr: what fd 2 got since the last one
            spans[index].append(span(clock[0], now, where, "succeeded" if succeeded else "failed"))
            clock[0] = now
            if succeeded:
                os.replace(workdir / files.local_output.format(index), home / files.local_output.format(index))
                ends[index] = TaskEnd(index, True, 0, attempts=attempt)
            else:
                with open(workdir / "stderr.txt", "rb") as file:
                    file.seek(logged[0])
                    errors[index] = file.read(written - logged[0]).decode(errors="replace")
            logged[0] = written

        with captured_output(workdir):
            exit_code = _call_worker(lambda path: worker.run_task(path, on_iteration), workdir)
        if exit_code:  # the chunk itself failed (task.py does not import, a file unreadable): every iteration left did
            stderr = (workdir / "stderr.txt").read_text(errors="replace")
            for index in todo:
                if index not in tried:
                    errors[index] = stderr
        todo = [index for index in todo if index not in ends]
        if not todo:
            break
    logs = home / "logs"
    for index in todo:
        logs.mkdir(exist_ok=True)
        (logs / f"task_{index}_stderr.txt").write_text(errors.get(index, ""))
        ends[index] = TaskEnd(index, False, 1, stderr_tail=tail(errors.get(index, "")), attempts=retries + 1)
    shutil.rmtree(workdir, ignore_errors=True)
    return [with_spans(ends[index], spans[index]) for index in indices]


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


def prepare_chunk(run_dir: Path, workdir: Path, indices: list, files: Files, fresh: bool = True) -> None:
    """A chunk's working directory: the config, and a resource file holding
    {CHUNK_KEY: [[index, parameters], ...]} for the given iterations. Its
    attempts share it (fresh=False), as a Batch task's do."""
    from constants import CHUNK_ERROR_PATTERN

    if fresh:
        if workdir.exists():
            shutil.rmtree(workdir)  # left over by a killed run (chunks.harvest took its results)
        workdir.mkdir(parents=True)
        _link(run_dir / files.config, workdir / files.config)
    for index in indices:  # an attempt before left its failures' tracebacks
        (workdir / CHUNK_ERROR_PATTERN.format(index)).unlink(missing_ok=True)
    (workdir / files.resource).write_bytes(chunk_resource(run_dir, indices, files))


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
