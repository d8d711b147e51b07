"""The worker image: building it from the Dockerfile and pushing it to a registry.

Both go through the docker SDK's low-level API, which streams the engine's
messages so that the build log and push progress show as they happen. The
SDK is imported inside the functions: the local backend never loads it, and
the azure backend only reads TASK_COMMAND_LINE from here.

The registry password ($REGISTRY_PASSWORD) goes to the engine and nowhere
else: it is never printed, logged or written to a file (the SDK keeps a
login in memory only, unlike `docker login`).
"""

import os
import re
import sys
from pathlib import Path

from .errors import SuperbatchError
from .progress import say

# What every task runs, in its working directory, in a container of the
# worker image: the Dockerfile puts worker.py in /app. The docker backend and
# the Batch tasks of the azure backend use this same line.
TASK_COMMAND_LINE = "python /app/worker.py"

BUILD_LOG_TAIL = 15  # lines of build output shown with a failure under --quiet

# Batch VMs are x86-64: an image built on an ARM laptop for its own
# architecture would not start there, so builds ask for this platform.
PLATFORM = "linux/amd64"


def qualified_image(image: str, registry_server: str | None) -> str:
    """The image name as a registry holds it: with the server in front, if one is set."""
    server = (registry_server or "").strip().rstrip("/")
    if server and not image.startswith(server + "/"):
        return f"{server}/{image}"
    return image


def docker_client(max_pool_size: int = 10):
    """A client of the engine that DOCKER_HOST (or the default socket) names,
    able to hold max_pool_size connections at once.

    Raises a one-line SuperbatchError when no engine answers.
    """
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(max_pool_size=max_pool_size)
        client.ping()
    except DockerException as error:
        where = os.environ.get("DOCKER_HOST") or "the default socket"
        raise SuperbatchError(
            f"no Docker engine is reachable at {where} ({_first_line(error)}); "
            "start Docker (or set DOCKER_HOST), or use --backend local"
        ) from None
    return client


def image_exists(client, name: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.api.inspect_image(name)
    except ImageNotFound:
        return False
    return True


def build(kit_dir, name: str, base_image: str | None = None, quiet: bool = False, client=None) -> str:
    """Build the image `name` from kit_dir/Dockerfile; return its id.

    base_image, if given, is the Dockerfile's BASE_IMAGE build argument. The
    build log streams to stderr unless quiet; a failed build raises a
    SuperbatchError naming the step that failed.
    """
    from docker.errors import APIError

    kit_dir = Path(kit_dir)
    if not (kit_dir / "Dockerfile").exists():
        raise SuperbatchError(f"--build: there is no Dockerfile in {kit_dir}")
    client = client or docker_client()
    say(f"building {name} from {kit_dir / 'Dockerfile'}" + (f" on {base_image}" if base_image else ""), quiet)

    step, log, image_id = "", [], None
    try:
        messages = client.api.build(
            path=str(kit_dir),
            tag=name,
            buildargs={"BASE_IMAGE": base_image} if base_image else None,
            rm=True,
            forcerm=True,  # no containers left behind by a failed step either
            decode=True,
            timeout=None,  # a long silent step (a big pip install) is not an error
            platform=PLATFORM,
        )
        for message in messages:
            if "error" in message:
                _build_failed(name, step, message["error"], log, quiet, base_image)
            text = message.get("stream", "")
            if "aux" in message and "ID" in message["aux"]:
                image_id = message["aux"]["ID"]
            if not text:
                continue
            if text.startswith("Step "):
                step = text.strip()
            log.extend(line for line in text.splitlines() if line.strip())
            del log[:-BUILD_LOG_TAIL]
            if not quiet:
                sys.stderr.write(text)
                sys.stderr.flush()
    except APIError as error:  # refused before it started, e.g. a context the engine cannot read
        raise SuperbatchError(f"building {name} failed: {_first_line(error)}") from None
    say(f"built {name}", quiet)
    return image_id or client.api.inspect_image(name)["Id"]


def _build_failed(name: str, step: str, error: str, log: list, quiet: bool, base_image: str | None):
    if quiet:  # the reason (pip's message, say) is in the log the user did not see
        sys.stderr.write("\n".join(log) + "\n")
    where = f" at {_shorten(step)}" if step else ""
    hint = ""
    if re.search(r" : FROM ", step, re.IGNORECASE):
        where += f" (BASE_IMAGE={base_image})" if base_image else ""
        hint = "; if the base image cannot be pulled here, build one locally and pass it with --base-image"
    raise SuperbatchError(f"building {name} failed{where}: {_first_line(error)}{hint}")


def platform_problem(attrs: dict) -> str | None:
    """Why an image (the engine's inspect answer) cannot run on Batch nodes, or None."""
    os_, arch = attrs.get("Os") or "?", attrs.get("Architecture") or "?"
    wanted_os, wanted_arch = PLATFORM.split("/")
    if (os_, arch) == (wanted_os, wanted_arch):
        return None
    return f"it is a {os_}/{arch} image and Batch nodes run {PLATFORM} (x86-64)"


def push(name: str, quiet: bool = False, client=None, environ=None) -> str:
    """Push the image `name` to $REGISTRY_SERVER; return the name pushed (repo:tag)."""
    return push_image(name, quiet, client, environ)[0]


def push_image(name: str, quiet: bool = False, client=None, environ=None) -> tuple:
    """Push the image `name` to $REGISTRY_SERVER; return (repo:tag, repo@sha256:...),
    the second None if the registry did not say which digest it stored.

    An image of another platform than Batch's is refused before any login.

    A name without the server in front is tagged SERVER/name first. With
    $REGISTRY_USERNAME and $REGISTRY_PASSWORD set, the engine logs in with
    them; without, it uses the credentials it already has (`docker login`,
    `az acr login`). environ stands in for os.environ where given.
    """
    from docker.errors import APIError
    from docker.utils import parse_repository_tag

    environ = os.environ if environ is None else environ
    server = environ.get("REGISTRY_SERVER", "").strip().rstrip("/")
    if not server:
        raise SuperbatchError("--push needs REGISTRY_SERVER, the registry to push to (e.g. myregistry.azurecr.io)")
    username = environ.get("REGISTRY_USERNAME") or None
    password = environ.get("REGISTRY_PASSWORD") or None
    if bool(username) != bool(password):
        raise SuperbatchError("--push: set both REGISTRY_USERNAME and REGISTRY_PASSWORD, or neither (to use the engine's own login)")
    client = client or docker_client()

    repository, tag = parse_repository_tag(qualified_image(name, server))
    tag = tag or "latest"
    target = f"{repository}:{tag}"
    if not image_exists(client, name):
        raise SuperbatchError(f"--push: there is no image {name} here; add --build to build it")
    problem = platform_problem(client.api.inspect_image(name))
    if problem:
        raise SuperbatchError(f"--push: {name} would not run on Azure Batch: {problem}; rebuild it with --build, which builds for {PLATFORM}")

    auth_config = None
    if username:
        auth_config = {"username": username, "password": password}
        try:
            client.api.login(username=username, password=password, registry=server, reauth=True)
        except APIError as error:
            # The engine's explanation names the registry and the status, never the password.
            reason = _first_line(error)
            if re.search(r"401|unauthorized|denied", reason, re.IGNORECASE):
                problem, check = f"{server} refused the login of {username!r}", "REGISTRY_USERNAME and REGISTRY_PASSWORD"
            else:
                problem, check = f"could not log in to {server}", "REGISTRY_SERVER"
            raise SuperbatchError(f"--push: {problem} ({reason}); check {check}") from None

    client.api.tag(name, repository, tag)  # after the login: a refused one leaves no tag behind

    say(f"pushing {target}", quiet)
    shown, digest = {}, None
    try:
        for message in client.api.push(repository, tag, stream=True, decode=True, auth_config=auth_config):
            if "error" in message:
                raise SuperbatchError(f"pushing {target} failed: {_first_line(message['error'])}")
            # The last message names the manifest digest the registry stored.
            aux = message.get("aux") or {}
            if str(aux.get("Digest", "")).startswith("sha256:"):
                digest = aux["Digest"]
            status, layer = message.get("status", ""), message.get("id", "")
            # One line per layer and state, not the byte counts in between.
            if status and shown.get(layer) != status and status not in ("Pushing", "Waiting", "Preparing"):
                shown[layer] = status
                say(f"  {layer + ': ' if layer else ''}{status}", quiet)
    except APIError as error:
        raise SuperbatchError(f"pushing {target} failed: {_first_line(error)}") from None
    say(f"pushed {target}" + (f" ({digest})" if digest else ""), quiet)
    return target, (f"{repository}@{digest}" if digest else None)


def _first_line(error) -> str:
    # An APIError's explanation is the engine's own words, without the HTTP wrapping.
    text = str(getattr(error, "explanation", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _shorten(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
