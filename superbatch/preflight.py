"""Pre-flight: task 0 run once in the worker image, on this machine, before the
image is pushed or anything is created in the cloud.

A task.py that fails in the image (a missing dependency, a bug the host's
Python hides) then fails here in seconds, with its error, instead of on every
node of a pool that is being billed. It runs through the docker backend's own
container machinery, so it is the same container a docker run would start.

The inputs are the run's staged ones; the task runs in runs/<run>/preflight/
and its output is thrown away, so task 0 still runs (and is counted) with the
rest, and a resumed run's outputs are never touched.
"""

import copy
import os
import shutil
from pathlib import Path

from .backends.base import tail
from .errors import SuperbatchError
from .progress import say
from .runs import RunFolder

INDEX = 0  # the task tried: every run has a task 0


def wanted(options) -> bool:
    """--preflight always; --build when the image is going to the cloud (pushed, or
    run by the azure backend). A docker run of a fresh build is its own pre-flight."""
    if getattr(options, "preflight", False):
        return True
    return bool(options.build) and (bool(options.push) or options.backend == "azure")


def preflight(run: RunFolder, options, kit_dir: Path, image: str) -> None:
    """Run task 0 in `image`; raise a SuperbatchError with its exit code and
    stderr tail if it fails or leaves no output."""
    from docker.errors import DockerException

    from .backends.docker import DockerBackend
    from .image import _first_line

    settings = copy.copy(options)
    settings.image, settings.build, settings.workers, settings.retries = image, False, 1, 0
    backend = DockerBackend(run, settings, kit_dir)
    backend.check()  # the engine answers and holds the image
    say(f"pre-flight: running task {INDEX} in {image}", options.quiet)
    workdir = run.path / "preflight"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    try:
        _link(run.config_path, workdir / run.files.config)
        _link(run.resource_path(INDEX), workdir / run.files.resource)
        try:
            exit_code, info = backend.run_in_workdir(INDEX, workdir)
        except DockerException as error:  # refused to start (a command not in the image, say)
            raise SuperbatchError(f"pre-flight: the Docker engine could not run task {INDEX} in the image {image}: "
                                  f"{_first_line(error)}; nothing was pushed or created in the cloud") from None
        stderr_path = workdir / "stderr.txt"
        stderr = stderr_path.read_text(errors="replace") if stderr_path.exists() else ""
        produced = (workdir / run.files.output).exists()
    finally:
        backend.close()
        shutil.rmtree(workdir, ignore_errors=True)
    if exit_code == 0 and produced:
        say(f"pre-flight: task {INDEX} succeeded in {image}", options.quiet)
        return
    if exit_code == 0:
        why = f"exited with code 0 but wrote no {run.files.output}"
    else:
        why = f"exited with code {exit_code}" + (f" ({info})" if info else "")
    lines = [f"pre-flight: task {INDEX} {why} in the image {image}; nothing was pushed or created in the cloud; "
             "fix task.py (or the image's dependencies) and run again; last lines of its stderr:"]
    lines.extend("    " + line for line in (tail(stderr) or "(empty)").splitlines())
    raise SuperbatchError("\n".join(lines))


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # instant, and no extra disk for a large config
    except OSError:
        shutil.copyfile(source, target)
