"""Execution: what a compute node does with one task run.

Every run gets a task directory (``stdout.txt``, ``stderr.txt`` and the
working directory ``wd/``), as on a Batch node. The steps are the service's:
download the resource files into the working directory, run the command line
there (never under a shell), then upload the output files whose upload
condition matches. With a Docker engine and container settings the command
line runs in the task's image, the node's task root mounted at the same path
and the working directory used as the container's working directory
(``containers.py``: image pulls, the node's image cache, the container run).

Nothing here touches the service state; ``models`` drives these steps from a
node's worker thread and records the outcome.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .containers import Containers, ImageCache, connect_docker as _connect_docker

DOWNLOAD_CHUNK = 1024 * 1024


@dataclass
class RunSpec:
    """Everything a node needs to run one attempt of one task."""
    task_dir: Path
    command_line: str
    env: dict[str, str]                    # AZ_BATCH_* plus the task's settings (not the host's)
    resource_files: list[dict] = field(default_factory=list)
    output_files: list[dict] = field(default_factory=list)
    container: dict | None = None          # the task's containerSettings
    registries: list[dict] = field(default_factory=list)  # the pool's containerRegistries
    node_root: Path | None = None          # mounted into containers
    max_wall_clock: float | None = None    # seconds
    images: ImageCache | None = None       # the node's pulled images (containers.py)
    user_identity: dict | None = None      # the task's userIdentity (containers.py maps it)

    @property
    def wd(self) -> Path:
        return self.task_dir / "wd"


@dataclass
class Outcome:
    exit_code: int | None = None
    failure: dict | None = None            # a BatchTaskFailureInfo body
    container_info: dict | None = None
    cancelled: str | None = None           # why the run was cut short, if it was


def failure(code: str, message: str, category: str = "usererror", **details: str) -> dict:
    info = {"category": category, "code": code, "message": message}
    if details:
        info["details"] = [{"name": k, "value": v} for k, v in details.items()]
    return info


class RunHandle:
    """Lets another thread stop a run: task terminated, node preempted or removed."""

    def __init__(self, preempt_after: float | None = None):
        self._lock = threading.Lock()
        self.reason: str | None = None
        self.proc: subprocess.Popen | None = None
        self.container = None
        self.deadline_reason: str | None = None
        # A run chosen for preemption is cut short after this long (or, if it
        # ends sooner, is treated as preempted just before completing).
        self.preempt_at = time.monotonic() + preempt_after if preempt_after is not None else None
        self.planned_preempt = preempt_after is not None

    def cancel(self, reason: str) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = reason
            proc, container = self.proc, self.container
        _kill(proc, container)

    def pause(self, seconds: float) -> bool:
        """Wait, unless the run is cancelled meanwhile; False if it was."""
        end = time.monotonic() + seconds
        while self.reason is None and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.02))
        return self.reason is None

    def deadline(self, spec: RunSpec, started: float):
        """(seconds to wait, what happens when they run out) for the nearer limit."""
        limits = []
        if spec.max_wall_clock is not None:
            limits.append((started + spec.max_wall_clock, "wallclock"))
        if self.preempt_at is not None:
            limits.append((self.preempt_at, "preempt"))
        if not limits:
            return None, None
        at, why = min(limits)
        return max(0.0, at - time.monotonic()), why

    def attach(self, proc=None, container=None) -> bool:
        """Record the running process; False if the run was cancelled meanwhile."""
        with self._lock:
            self.proc, self.container = proc, container
            cancelled = self.reason is not None
        if cancelled:
            _kill(proc, container)
        return not cancelled


def _kill(proc, container) -> None:
    if proc is not None and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)   # the whole process group
        except (ProcessLookupError, PermissionError):
            pass
    if container is not None:
        # A Docker API call can take a while; callers may hold the service
        # lock, so the kill is sent from a thread of its own.
        threading.Thread(target=_kill_container, args=(container,), daemon=True).start()


def _kill_container(container) -> None:
    try:
        container.kill()
    except Exception:  # already gone: nothing to stop
        pass


def _redact(url: str) -> str:
    """A URL without its query string, so SAS tokens never reach logs or task info."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


# --- resource files ---------------------------------------------------------------

def download_resource_files(spec: RunSpec) -> dict | None:
    """Fetch every resource file into the working directory; a failure body or None."""
    for rf in spec.resource_files:
        try:
            if "httpUrl" in rf:
                _download_http(rf["httpUrl"], spec.wd / rf["filePath"])
            elif "storageContainerUrl" in rf:
                _download_container(rf, spec.wd)
            else:
                return failure("ResourceFileSourceNotSupported",
                               "autoStorageContainerName needs a linked storage account, "
                               "which the Batch emulator does not have.")
            if rf.get("fileMode") and "httpUrl" in rf:
                os.chmod(spec.wd / rf["filePath"], int(rf["fileMode"], 8))
        except urllib.error.HTTPError as e:
            code = {403: "BlobAccessDenied", 404: "BlobNotFound"}.get(e.code, "BlobDownloadMiscError")
            return failure(code, f"Downloading {_redact(rf['httpUrl'])} failed with HTTP {e.code}.",
                           FilePath=rf.get("filePath", ""))
        except Exception as e:  # unreachable host, bad container SAS, disk errors
            url = rf.get("httpUrl") or rf.get("storageContainerUrl") or ""
            code = "BlobDownloadMiscError" if "httpUrl" in rf else "ResourceContainerListMiscError"
            return failure(code, f"Downloading {_redact(url)} failed: {type(e).__name__}: {str(e)[:300]}",
                           FilePath=rf.get("filePath", ""))
    return None


def _download_http(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as out:
        shutil.copyfileobj(resp, out, DOWNLOAD_CHUNK)   # streamed, never whole in memory


def _download_container(rf: dict, wd: Path) -> None:
    from azure.storage.blob import ContainerClient

    base = wd / rf.get("filePath", "")
    container = ContainerClient.from_container_url(rf["storageContainerUrl"])
    with container:
        for blob in container.list_blobs(name_starts_with=rf.get("blobPrefix") or None):
            dest = base / blob.name
            if wd.resolve() not in dest.resolve().parents:
                continue  # a blob name that would escape the working directory
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "wb") as out:
                container.download_blob(blob.name).readinto(out)


# --- the command line -------------------------------------------------------------

class Runner:
    """Runs command lines on the host, or in containers when an engine is there."""

    def __init__(self, docker_mode: str = "auto"):
        if docker_mode not in ("auto", "on", "off"):
            raise ValueError(f"docker mode must be auto, on or off, not {docker_mode!r}")
        self.docker = None
        self.docker_problem = "docker mode is off"
        if docker_mode != "off":
            self.docker, self.docker_problem = _connect_docker()
            if self.docker is None and docker_mode == "on":
                raise RuntimeError(f"--docker on, but no Docker engine answers: {self.docker_problem}")
        self.containers = Containers(self.docker) if self.docker is not None else None
        # Seconds added to each run on the host: a model of the service's fixed
        # cost per task (scheduling, container start), not a measurement of it.
        self.task_overhead = 0.0

    def run(self, spec: RunSpec, handle: RunHandle) -> Outcome:
        if spec.container is not None and self.containers is not None:
            # A spec without a node cache (a one-off run) gets a cache of its own.
            return self.containers.run(spec, handle, spec.images if spec.images is not None else ImageCache())
        return self._run_host(spec, handle)

    def _run_host(self, spec: RunSpec, handle: RunHandle) -> Outcome:
        try:
            argv = shlex.split(spec.command_line)
        except ValueError as e:
            return Outcome(failure=failure("CommandLineInvalid", f"The command line cannot be split: {e}"))
        if not argv:
            return Outcome(failure=failure("CommandLineInvalid", "The command line is empty."))
        if self.task_overhead > 0 and not handle.pause(self.task_overhead):
            return Outcome(cancelled=handle.reason)
        started = time.monotonic()
        with open(spec.task_dir / "stdout.txt", "ab") as out, open(spec.task_dir / "stderr.txt", "ab") as err:
            try:
                # No shell, as on a Linux Batch node; a new session so a kill
                # reaches the children the command line started.
                proc = subprocess.Popen(argv, cwd=spec.wd, env={**os.environ, **spec.env}, stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=err, start_new_session=True)
            except FileNotFoundError:
                return Outcome(failure=failure(
                    "CommandProgramNotFound", f"The program {argv[0]!r} of the command line was not found."))
            except PermissionError:
                return Outcome(failure=failure(
                    "CommandProgramNotExecutable", f"The program {argv[0]!r} cannot be executed."))
        if not handle.attach(proc=proc):
            proc.wait()
            return Outcome(cancelled=handle.reason)
        timeout, why = handle.deadline(spec, started)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            handle.cancel(why)
            code = proc.wait()
        if handle.reason is not None:
            return Outcome(exit_code=code, cancelled=handle.reason)
        return Outcome(exit_code=code)

    def prefetch(self, images: list[str], registries: list[dict], cache: ImageCache) -> list[dict]:
        """Pull a pool's containerImageNames as a node starts; the node's errors."""
        if self.containers is None:
            return []
        return self.containers.prefetch(images, registries, cache)


# --- output files -----------------------------------------------------------------

def upload_output_files(spec: RunSpec, succeeded: bool, handle: RunHandle | None = None) -> dict | None:
    """Upload the output files whose condition holds; a failure body or None.
    With a handle, a cancelled run stops uploading (see _Transport)."""
    wanted = "tasksuccess" if succeeded else "taskfailure"
    log = []
    for of in spec.output_files:
        if of["uploadOptions"]["uploadCondition"] not in (wanted, "taskcompletion"):
            continue
        dest = of["destination"]["container"]
        pattern = of["filePattern"]
        try:
            for local, blob_name in _matches(spec.wd, pattern, dest.get("path")):
                _upload(dest["containerUrl"], blob_name, local, handle)
                log.append(f"uploaded {local} to {blob_name}")
        except Exception as e:
            message = (f"Uploading {pattern!r} to {_redact(dest['containerUrl'])} failed: "
                       f"{type(e).__name__}: {str(e)[:300]}")
            (spec.task_dir / "fileuploaderr.txt").write_text(message + "\n")
            return failure("FileUploadMiscError", message, FilePattern=pattern)
    if log:
        (spec.task_dir / "fileuploadout.txt").write_text("\n".join(log) + "\n")
    return None


def _matches(wd: Path, pattern: str, path: str | None):
    """(local file, blob name) pairs for one filePattern, as the service names them."""
    if not glob.has_magic(pattern):
        local = Path(pattern) if os.path.isabs(pattern) else wd / pattern
        if local.is_file():
            yield local, path or local.name
        return
    # The part of the pattern before its first wildcard is the base that is
    # cut off; what follows keeps its directory structure under ``path``.
    parts = pattern.split("/")
    fixed = []
    for p in parts:
        if glob.has_magic(p):
            break
        fixed.append(p)
    base = Path("/".join(fixed)) if fixed else Path()
    base = base if base.is_absolute() else wd / base
    root = pattern if os.path.isabs(pattern) else str(wd / pattern)
    for name in sorted(glob.glob(root, recursive=True)):
        local = Path(name)
        if not local.is_file():
            continue
        rel = local.relative_to(base).as_posix()
        yield local, f"{path.rstrip('/')}/{rel}" if path else rel


def _upload(container_url: str, blob_name: str, local: Path, handle: RunHandle | None = None) -> None:
    from azure.storage.blob import ContainerClient

    options = {"transport": _transport(handle)} if handle is not None else {}
    with ContainerClient.from_container_url(container_url, **options) as container, open(local, "rb") as data:
        container.upload_blob(blob_name, data, overwrite=True)


def _transport(handle: RunHandle):
    """The storage SDK's transport, its pauses between retries cut short when
    the run is cancelled: storage that is gone is otherwise retried for about
    a minute, and a stopping emulator would wait that long."""
    from azure.core.pipeline.transport import RequestsTransport

    class Transport(RequestsTransport):
        def sleep(self, duration):
            if not handle.pause(duration):
                raise RuntimeError(f"the run was cancelled ({handle.reason})")

    return Transport()
