"""Container images on emulated nodes: pulling as a node does, the node's
own image cache, and running one task's command line in a container.

A Batch node pulls each image once and keeps it: a node that has pulled
``repo:tag`` runs that same image for later tasks even after someone pushes
a new image under the tag (Azure/Batch#63, Azure/batch-shipyard#156), while
``repo@sha256:…`` always names one exact image. The emulated nodes share one
Docker engine, whose ``repo:tag`` moves whenever any node (or anyone) pulls
or tags it, so each node remembers the image *id* it got, never the tag.
"""

from __future__ import annotations

import shlex
import threading
import time

DOCKER_HUB = "docker.io"


class ImageCache:
    """What one node has pulled: normalised image reference -> engine image id."""

    def __init__(self):
        self.ids: dict[str, str] = {}


class PullError(Exception):
    """An image could not be pulled; ``code`` is the service's code for it."""

    def __init__(self, code: str, image: str, reason: str):
        super().__init__(f"{code}: {image}: {reason}")
        self.code, self.image, self.reason = code, image, reason


def normalise(image: str) -> str:
    """``repo`` means ``repo:latest``; a tag or a digest is kept as given."""
    last = image.split("/")[-1]
    return image if ("@" in last or ":" in last) else f"{image}:latest"


def split_reference(image: str) -> tuple[str, str]:
    """(repository, tag or ``sha256:…`` digest) of a normalised reference."""
    if "@" in image:
        repo, _, digest = image.partition("@")
        return repo, digest
    repo, _, tag = image.rpartition(":")
    return repo, tag


def registry_host(image: str) -> str:
    first = image.split("/")[0]
    explicit = "/" in image and ("." in first or ":" in first or first == "localhost")
    return first if explicit else DOCKER_HUB


def auth_for(image: str, registries: list[dict]) -> dict | None:
    """The credentials of the registry that serves ``image``, in docker SDK form."""
    host = registry_host(image)
    for reg in registries:
        server = (reg.get("registryServer") or DOCKER_HUB).split("://")[-1].rstrip("/")
        if server == host and reg.get("username"):
            return {"username": reg["username"], "password": reg.get("password", "")}
    return None


def _pull_failure_code(reason: str) -> str:
    # The service publishes no node error code for this case; these are the
    # two container codes of the .NET TaskFailureInformationCodes table
    # ("The container image was invalid." / "The specified container
    # registry was invalid."), a refused login being the registry's fault.
    lowered = reason.lower()
    if any(word in lowered for word in ("unauthorized", "authentication required", "no basic auth",
                                        "denied", "401")):
        return "ContainerInvalidRegistry"
    return "ContainerInvalidImage"


class Containers:
    """Image pulls and container runs against one Docker engine."""

    def __init__(self, client):
        self.client = client
        # One pull at a time: a pull and the lookup of what it brought must
        # not interleave with another node's pull of the same tag.
        self._pull_lock = threading.Lock()

    def resolve(self, image: str, registries: list[dict], cache: ImageCache) -> str:
        """The image id ``image`` means on the node that owns ``cache``,
        pulling it (and remembering it there) if the node does not have it."""
        import docker.errors

        key = normalise(image)
        known = cache.ids.get(key)
        if known is not None:
            try:
                self.client.images.get(known)
                return known
            except docker.errors.ImageNotFound:
                pass   # removed from the shared engine behind the node's back: pull again
        image_id = self._fetch(key, registries)
        cache.ids[key] = image_id
        return image_id

    def _fetch(self, image: str, registries: list[dict]) -> str:
        import docker.errors

        repo, ref = split_reference(image)
        with self._pull_lock:
            if ref.startswith("sha256:") or registry_host(image) == DOCKER_HUB:
                # A digest is exact, so a local copy is that image. Docker Hub
                # cannot be reached from here: the engine's own copy stands in.
                try:
                    return self.client.images.get(image).id
                except docker.errors.ImageNotFound:
                    pass
            digest = None
            try:
                # The low-level stream, because an error can arrive inside an
                # HTTP 200 answer, and the stream names the digest it got.
                for chunk in self.client.api.pull(repo, tag=ref, stream=True, decode=True,
                                                  auth_config=auth_for(image, registries)):
                    if "error" in chunk or "errorDetail" in chunk:
                        reason = chunk.get("error") or chunk["errorDetail"].get("message", "")
                        raise PullError(_pull_failure_code(reason), image, reason)
                    status = chunk.get("status", "")
                    if status.startswith("Digest: "):
                        digest = status.split(": ", 1)[1].strip()
            except docker.errors.APIError as e:
                reason = str(e.explanation or e)
                raise PullError(_pull_failure_code(reason), image, reason[:300]) from None
            # Look the pulled image up by the digest it arrived with, not by the
            # tag, which another pull may already have moved.
            exact = f"{repo}@{digest}" if digest else image
            return self.client.images.get(exact).id

    def run(self, spec, handle, cache: ImageCache):
        """Run ``spec`` (an execution.RunSpec) in its image; an execution.Outcome."""
        import docker.errors

        from .execution import Outcome, failure

        settings = spec.container
        image = settings["imageName"]
        try:
            image_id = self.resolve(image, [settings["registry"]] if settings.get("registry")
                                    else spec.registries, cache)
        except PullError as e:
            return Outcome(failure=failure(
                "ContainerPullImageFailed", f"Pulling the image {image!r} failed: {e.reason[:300]}"))
        try:
            argv = shlex.split(spec.command_line)
        except ValueError as e:
            return Outcome(failure=failure("CommandLineInvalid", f"The command line cannot be split: {e}"))
        root = str(spec.node_root or spec.task_dir)
        kwargs = {}
        user = container_user(settings.get("containerRunOptions") or "") or task_user(spec.user_identity, spec.wd)
        if user:
            kwargs["user"] = user
        if settings.get("workingDirectory", "taskWorkingDirectory") == "taskWorkingDirectory":
            kwargs["working_dir"] = str(spec.wd)
        # Inside the container only Batch's variables and the task's own
        # settings are set, not the emulator host's environment.
        env = dict(spec.env)
        try:
            container = self.client.containers.create(
                image_id, command=argv or None, environment=env, detach=True,
                volumes={root: {"bind": root, "mode": "rw"}},
                # The node's network: a task reaches storage as its node does (the
                # emulator's choice, README; here that reaches Azurite on 127.0.0.1).
                network_mode="host", **kwargs)
        except docker.errors.APIError as e:
            return Outcome(failure=failure("ContainerCreateFailed", f"Creating the container failed: {str(e)[:300]}"))
        info = {"containerId": container.id, "state": "created"}
        try:
            if not handle.attach(container=container):
                return Outcome(cancelled=handle.reason, container_info=info)
            started = time.monotonic()
            try:
                container.start()
            except docker.errors.APIError as e:
                return Outcome(failure=failure("ContainerStartFailed", f"Starting the container failed: {str(e)[:300]}"),
                               container_info={**info, "error": str(e)[:300]})
            timeout, why = handle.deadline(spec, started)
            try:
                result = container.wait(timeout=timeout) if timeout is not None else container.wait()
                code = int(result.get("StatusCode", -1))
            except Exception:  # the wait timed out: the run reached its limit
                handle.cancel(why)
                code = int(container.wait().get("StatusCode", -1))
            with open(spec.task_dir / "stdout.txt", "ab") as out:
                out.write(container.logs(stdout=True, stderr=False))
            with open(spec.task_dir / "stderr.txt", "ab") as err:
                err.write(container.logs(stdout=False, stderr=True))
            info["state"] = "exited"
            if handle.reason is not None:
                return Outcome(exit_code=code, cancelled=handle.reason, container_info=info)
            return Outcome(exit_code=code, container_info=info)
        finally:
            try:
                container.remove(force=True)
            except Exception:
                pass

    def prefetch(self, images: list[str], registries: list[dict], cache: ImageCache) -> list[dict]:
        """Pull a pool's containerImageNames onto a starting node; the node's
        ``errors`` (BatchNodeError bodies), empty when every pull worked."""
        errors = []
        for image in images:
            try:
                self.resolve(image, registries, cache)
            except PullError as e:
                errors.append({
                    "code": e.code,
                    "message": f"The container image {image} could not be pulled when the node started.",
                    "errorDetails": [{"name": "ContainerImage", "value": image},
                                     {"name": "Reason", "value": e.reason[:300]}],
                })
        return errors


def connect_docker():
    try:
        import docker

        client = docker.from_env(timeout=30)
        client.ping()
        return client, None
    except Exception as e:  # no socket, no daemon, no permission
        return None, f"{type(e).__name__}: {e}"


# The uid:gid a non-admin auto-user runs as in a container. The service
# documents that it maps the task's user into the container and that only a
# pool-scope auto-user with admin elevation runs as root there
# (https://learn.microsoft.com/azure/batch/batch-docker-container-workloads,
# "Container task": "Batch will map the user/group permission to the
# container"); which uid the auto-user has is not documented: 1000 is the
# emulator's own choice.
NONADMIN_USER = (1000, 1000)


def task_user(user_identity: dict | None, wd) -> str | None:
    """The container user for a task's userIdentity: root for an auto-user
    with admin elevation, the non-admin user otherwise (the default identity
    is a non-admin pool auto-user). A named user (``username``) runs as the
    non-admin user too: the emulator creates no pool user accounts. The
    task's working directory is given to the non-admin user, as Batch gives
    the task's user its own directory."""
    auto = (user_identity or {}).get("autoUser") or {}
    if str(auto.get("elevationLevel", "nonadmin")).lower() == "admin":
        return "0:0"
    uid, gid = NONADMIN_USER
    import os

    if not hasattr(os, "geteuid"):
        return None
    if os.geteuid() != 0:
        return f"{os.getuid()}:{os.getgid()}"   # not root: its own user, who owns the task directory
    for folder, _, files in os.walk(wd):
        os.chown(folder, uid, gid)
        for name in files:
            os.chown(os.path.join(folder, name), uid, gid)
    return f"{uid}:{gid}"


def container_user(run_options: str):
    """The --user (or -u) of a task's containerRunOptions, the one `docker
    create` option the emulator honours; the others are ignored."""
    words = shlex.split(run_options)
    for position, word in enumerate(words):
        if word in ("--user", "-u") and position + 1 < len(words):
            return words[position + 1]
        if word.startswith("--user="):
            return word.split("=", 1)[1]
    return None
