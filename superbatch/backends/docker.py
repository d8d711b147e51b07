"""The docker backend: every task in a container of the worker image.

This is the Batch task, on this machine: the task's working directory
(runs/<run>/work/task_<i>/, holding its two input files) is mounted into the
container at the same path and made its working directory, and the container
runs the same command line as a Batch task (TASK_COMMAND_LINE, or task.py's
WORKER, or --task-command). Running the
kit here first shows that the image has everything task.py needs before it
goes to the cloud.

Up to --workers containers run at once, each followed by a thread that waits
for it, keeps its stdout and stderr as stdout.txt and stderr.txt (as Batch
does), and removes it. Containers run as the host user, so that the files
the task writes in the mounted directory are the user's to read and delete.
With --task-timeout, a container still running at the limit (counted from
the task's first start, retries included, as Batch's maxWallClockTime is) is
killed and the task reported as timed out.

With --chunk (auto by default here, with worker.py and no --task-timeout) a
container runs a chunk of iterations in runs/<run>/work/chunk_<i>/; when it
ends, each iteration's result goes home and each failed one is reported with
its traceback and tried again alone (--retries). The times of the result
files tell each iteration's duration, which sizes the next chunks (auto).
"""

import os
import shlex
import shutil
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Iterator, Optional, Sequence

from .. import chunks
from ..chunks import ChunkSizer
from ..errors import SuperbatchError
from ..image import TASK_COMMAND_LINE  # image.py loads the docker SDK only when used
from ..taskdef import IMAGE_HOME
from .base import Backend, TaskEnd, TaskStates, span, tail
from .local import finish, prepare_chunk, prepare_workdir, timed_out, with_spans

CHUNK_SECONDS = 10.0  # auto: a container's start costs about a second; ten make it small
LABEL = "superbatch.run"  # on every container, so that leftovers can be found: docker ps -a --filter label=superbatch.run


class DockerBackend(Backend):
    name = "docker"

    def check(self) -> None:
        from ..image import docker_client, image_exists

        # One connection per waiting thread, and a few for starting and removing.
        self.client = docker_client(max_pool_size=self.options.workers + 4)
        if not self.options.build and not image_exists(self.client, self.options.image):
            raise SuperbatchError(
                f"there is no image {self.options.image} in the Docker engine; "
                "add --build to build it from the Dockerfile (or pass --image NAME)"
            )
        chunk = chunks.resolve(getattr(self.options, "chunk", None), bool(self.task_command(IMAGE_HOME)),
                               getattr(self.options, "task_timeout", None))
        self.chunk = chunk
        self._lock = threading.Lock()
        self._containers = {}  # index -> the running container, for interrupted()
        self._pending = self._running = 0
        self._stopping = False

    def submit(self, indices: Sequence[int]) -> None:
        self.queue = list(indices)
        self._pending = len(self.queue)

    def follow(self) -> Iterator[Optional[TaskEnd]]:
        pool = ThreadPoolExecutor(self.options.workers, thread_name_prefix="container")
        try:
            if self.chunk == 1:
                futures = {pool.submit(self._run_task, index) for index in self.queue}
            else:  # a chunk is sized when a slot frees, from the durations measured so far
                sizer, left = ChunkSizer(self.chunk, self.options.workers, CHUNK_SECONDS), list(reversed(self.queue))

                def next_chunk():
                    return pool.submit(self._run_chunk, [left.pop() for _ in range(sizer.next(len(left)))], sizer)

                futures = {next_chunk() for _ in range(min(self.options.workers, len(left)))}
            while futures:
                done, futures = wait(futures, timeout=1.0, return_when=FIRST_COMPLETED)
                if not done:
                    yield None  # nothing ended this second: let the progress refresh
                for future in done:
                    result = future.result()
                    yield from result if isinstance(result, list) else [result]
                    if self.chunk != 1 and left and not self._stopping:
                        futures.add(next_chunk())
        finally:
            # On Ctrl-C, tasks not started yet never start; running ones are
            # killed by interrupted() or close().
            self._stopping = True
            pool.shutdown(wait=False, cancel_futures=True)

    def fetch(self, index: int, destination: Path) -> None:
        pass  # the output was renamed into the run folder when the container ended

    def states(self) -> Optional[TaskStates]:
        with self._lock:
            return TaskStates(pending=self._pending, running=self._running)

    def interrupted(self) -> None:
        self._stopping = True  # no attempt starts after this
        with self._lock:
            running = list(self._containers.values())
        for container in running:
            _quietly(container.kill)

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is None:
            return
        self.interrupted()  # nothing is left running once the controller exits
        client.close()

    def run_in_workdir(self, index: int, workdir: Path) -> tuple[Optional[int], str]:
        """Run task `index` once, its files in workdir, outside follow() (pre-flight)."""
        return self._run_container(index, workdir)

    # --- one task, in a worker thread ---------------------------------------

    def _run_task(self, index: int) -> TaskEnd:
        with self._lock:
            self._pending -= 1
            self._running += 1
        try:
            return self._attempts(index)
        except Exception as error:  # the engine failed us (not the task): report it as this task's failure
            return TaskEnd(index, False, None, failure_info=f"the Docker engine failed: {error}")
        finally:
            with self._lock:
                self._running -= 1

    def _run_chunk(self, indices: list, sizer: ChunkSizer) -> list:
        with self._lock:
            self._pending -= len(indices)
            self._running += len(indices)
        try:
            return self._chunk_attempts(indices, sizer)
        except Exception as error:  # the engine failed us: every iteration of the chunk that is not home fails
            return [TaskEnd(index, self.run.is_home(index), None if not self.run.is_home(index) else 0,
                            failure_info=f"the Docker engine failed: {error}") for index in indices]
        finally:
            with self._lock:
                self._running -= len(indices)

    def _chunk_attempts(self, indices: list, sizer: ChunkSizer) -> list:
        from constants import CHUNK_ERROR_PATTERN

        files, home = self.run.files, self.run.path
        workdir = self.run.work_dir / f"chunk_{indices[0]}"
        where = "slot " + threading.current_thread().name.rsplit("_", 1)[-1]
        ends, spans, errors, todo = {}, {index: [] for index in indices}, {}, list(indices)
        for attempt in range(1, self.options.retries + 2):
            prepare_chunk(home, workdir, todo, files, fresh=attempt == 1)
            started = time.time()
            exit_code, info = self._run_container(indices[0], workdir)
            if exit_code is None and not info:  # interrupted before it started
                break
            # Each iteration ended when its file was written: the times give the spans and the durations.
            ended = []
            for index in todo:
                for path, succeeded in ((workdir / files.local_output.format(index), True), (workdir / CHUNK_ERROR_PATTERN.format(index), False)):
                    if path.exists():
                        ended.append((path.stat().st_mtime, index, path, succeeded))
            previous = started
            for at, index, path, succeeded in sorted(ended):
                spans[index].append(span(previous, at, where, "succeeded" if succeeded else "failed"))
                if previous != started or len(ended) == 1:  # the first one's time includes the container's start
                    sizer.observe(at - previous)
                previous = at
                if succeeded:
                    os.replace(path, home / files.local_output.format(index))
                    ends[index] = TaskEnd(index, True, 0, attempts=attempt)
                else:
                    errors[index] = (1, path.read_text(errors="replace"), "")
            stderr = (workdir / "stderr.txt").read_text(errors="replace") if (workdir / "stderr.txt").exists() else ""
            for index in todo:
                if index not in ends and not any(index == item[1] for item in ended):
                    errors[index] = (exit_code, stderr + (f"\nthe container exited with code {exit_code} before iteration {index} ended" if exit_code == 0 else ""), info)
            todo = [index for index in todo if index not in ends]
            if not todo or self._stopping:
                break
        shutil.rmtree(workdir, ignore_errors=True)
        logs = home / "logs"
        for index in todo:
            code, text, info = errors.get(index, (None, "", "the run was interrupted"))
            if text:
                logs.mkdir(exist_ok=True)
                (logs / f"task_{index}_stderr.txt").write_text(text)
            ends[index] = TaskEnd(index, False, code or 1 if code is not None else None, stderr_tail=tail(text), failure_info=info, attempts=attempt)
        return [with_spans(ends[index], spans[index]) for index in indices]

    def _attempts(self, index: int) -> TaskEnd:
        workdir = prepare_workdir(self.run.path, index, self.run.files)
        timeout = getattr(self.options, "task_timeout", None)
        deadline = time.monotonic() + timeout if timeout else None
        spans, where = [], "slot " + threading.current_thread().name.rsplit("_", 1)[-1]  # the pool's thread: one container at a time
        for attempt in range(1, self.options.retries + 2):
            started = time.time()
            exit_code, info = self._run_container(index, workdir, deadline)
            spans.append(span(started, time.time(), where, "succeeded" if exit_code == 0 else "failed"))
            if info == TIMED_OUT:
                return with_spans(timed_out(self.run.path, index, timeout, attempt), spans)
            if exit_code == 0:
                break
            if self._stopping:  # not run, or killed by interrupted(): not the task's failure, keep no log of it
                shutil.rmtree(workdir, ignore_errors=True)
                return TaskEnd(index, False, exit_code, failure_info="the run was interrupted", attempts=attempt)
        end = with_spans(finish(self.run.path, workdir, index, exit_code, attempt, self.run.files), spans)
        if info and not end.succeeded:
            end.failure_info = info
        return end

    def _run_container(self, index: int, workdir: Path, deadline: Optional[float] = None) -> tuple[Optional[int], str]:
        """Run the task's container to its end, or kill it at the deadline; its logs go to workdir.

        Returns (exit code, info), (None, TIMED_OUT) when it was killed at the
        deadline, or (None, "") when the run is being interrupted and the
        container was not started.
        """
        if self._stopping:
            return None, ""
        mount = str(workdir.resolve())
        container = self.client.containers.create(
            self.options.image,
            command=self.task_command(IMAGE_HOME) or shlex.split(TASK_COMMAND_LINE),
            working_dir=mount,
            volumes={mount: {"bind": mount, "mode": "rw"}},
            user=_host_user(),
            labels={LABEL: self.run.name, "superbatch.task": str(index)},
            detach=True,
        )
        try:
            with self._lock:
                self._containers[index] = container
            container.start()
            if self._stopping:  # interrupted() may have come between create and start
                _quietly(container.kill)
            exit_code = self._wait(container, deadline)
            (workdir / "stdout.txt").write_bytes(container.logs(stdout=True, stderr=False))
            (workdir / "stderr.txt").write_bytes(container.logs(stdout=False, stderr=True))
            if exit_code is None:
                return None, TIMED_OUT
            container.reload()
            info = "the container ran out of memory and was killed" if container.attrs["State"].get("OOMKilled") else ""
            return exit_code, info
        finally:
            with self._lock:
                self._containers.pop(index, None)
            _quietly(lambda: container.remove(force=True))

    @staticmethod
    def _wait(container, deadline: Optional[float]) -> Optional[int]:
        """The container's exit code, or None once it was killed at the deadline."""
        if deadline is None:
            return container.wait(timeout=None)["StatusCode"]
        import requests

        try:
            return container.wait(timeout=max(1, int(deadline - time.monotonic() + 0.999)))["StatusCode"]
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            pass  # still running at the deadline
        _quietly(container.kill)
        container.wait(timeout=None)
        return None


TIMED_OUT = "timed out"  # _run_container's info for a container killed at --task-timeout


def _host_user() -> Optional[str]:
    """uid:gid of the user running the controller (None where there is no such thing)."""
    if hasattr(os, "getuid"):
        return f"{os.getuid()}:{os.getgid()}"
    return None


def _quietly(action) -> None:
    from docker.errors import DockerException

    try:
        action()
    except DockerException:
        pass  # already gone
