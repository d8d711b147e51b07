"""Fixtures of the tests that need a real Docker engine.

What they read (`.ci/setup-docker.sh` brings all three up and prints the
first three; the defaults are its own):

    SUPERBATCH_TEST_BASE_IMAGE         the base for the Dockerfile's BASE_IMAGE (superbatch-base:bookworm)
    SUPERBATCH_TEST_REGISTRY           a registry with a login, host:port (127.0.0.1:5001)
    SUPERBATCH_TEST_REGISTRY_USERNAME  its user (superbatch)
    SUPERBATCH_TEST_REGISTRY_PASSWORD  its password (a fixed test-only one, like Azurite's key)

The `kit` fixture (tests/conftest.py) is a temporary copy of the kit,
Dockerfile and .dockerignore included.

What happens when one is missing is tests/support/needs.py's rule: without
an engine or a registry the tests that need it are skipped with the reason,
except under CI=true, where they fail; a missing base image or a registry
that refuses the login is always a failure.

An image-based task for other tests (the Batch emulator's container tasks):
use `registry_image`, the worker image built from the repo's Dockerfile and
pushed to the local registry; it carries the reference to give a Batch pool
and task (`registry_image.name`) and the registry's server, user and password
(for the pool's containerRegistries). The task's command line is
superbatch.image.TASK_COMMAND_LINE, run in the task's working directory.
"""

import base64
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass

import pytest

from superbatch.errors import SuperbatchError
from superbatch.image import build, docker_client as make_docker_client, image_exists, push
from tests.kit import Kit
from tests.support.needs import Need, check_registry, missing

BASE_IMAGE = os.environ.get("SUPERBATCH_TEST_BASE_IMAGE", "superbatch-base:bookworm")
REGISTRY = os.environ.get("SUPERBATCH_TEST_REGISTRY", "127.0.0.1:5001")
REGISTRY_USERNAME = os.environ.get("SUPERBATCH_TEST_REGISTRY_USERNAME", "superbatch")
REGISTRY_PASSWORD = os.environ.get("SUPERBATCH_TEST_REGISTRY_PASSWORD", "superbatch-test-only")

# A fixed name, kept after the session: the next session's build then reuses
# the dependency layers and takes seconds.
WORKER_IMAGE = "superbatch-worker-test:latest"


@pytest.fixture(scope="session")
def docker_client():
    try:
        client = make_docker_client(max_pool_size=16)
    except SuperbatchError as error:
        missing(Need.ENGINE, str(error))
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_client):
    if not image_exists(docker_client, BASE_IMAGE):
        missing(Need.BASE_IMAGE, f"the base image {BASE_IMAGE} is not in the Docker engine")
    return BASE_IMAGE


@pytest.fixture(scope="session")
def worker_image(docker_client, base_image, tmp_path_factory):
    """The worker image, built once per session from the repo's Dockerfile."""
    kit = Kit(tmp_path_factory.mktemp("image-kit"))
    build(kit.path, WORKER_IMAGE, base_image=base_image, quiet=True, client=docker_client)
    return WORKER_IMAGE


@dataclass
class Registry:
    server: str
    username: str
    password: str

    def env(self, password=None) -> dict:
        """The variables --push reads."""
        return {"REGISTRY_SERVER": self.server, "REGISTRY_USERNAME": self.username, "REGISTRY_PASSWORD": password or self.password}

    def tags(self, repository: str) -> list:
        """The tags of a repository, straight from the registry's HTTP API."""
        request = urllib.request.Request(f"http://{self.server}/v2/{repository}/tags/list")
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.load(response).get("tags") or []
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return []
            raise


@pytest.fixture(scope="session")
def registry(docker_client):
    """The local registry that stands in for Azure Container Registry."""
    check_registry(REGISTRY, REGISTRY_USERNAME, REGISTRY_PASSWORD)
    return Registry(REGISTRY, REGISTRY_USERNAME, REGISTRY_PASSWORD)


@dataclass
class RegistryImage:
    name: str  # server/repository:tag, what a pool pulls
    registry: Registry


@pytest.fixture(scope="session")
def registry_image(worker_image, registry, docker_client):
    """The worker image pushed to the local registry, for tests that run it
    as a Batch container task would: pulled from a registry with a login."""
    name = push(worker_image, quiet=True, client=docker_client, environ=registry.env())
    return RegistryImage(name, registry)
