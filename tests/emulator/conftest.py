"""Fixtures of the Batch emulator tests: the emulator, Azurite, a ready pool.

Every test talks to the emulator through the real azure-batch SDK over HTTP.
One emulator serves the whole session (each test uses its own job ids);
tests that need special settings (faults, a wrong key) start their own.
"""

from __future__ import annotations

import itertools
import os
import shlex
import sys
import time
import uuid

import pytest
from azure.batch import models as bm

from batch_emulator.containers import connect_docker
from tests.support.needs import Need, check_registry, missing, refused
from tests.support.servers import azurite_command, start_azurite, start_batch_emulator

# The container tests' parts (.ci/setup-docker.sh brings them up; these are its defaults).
BASE_IMAGE = os.environ.get("SUPERBATCH_TEST_BASE_IMAGE", "superbatch-base:bookworm")
REGISTRY = os.environ.get("SUPERBATCH_TEST_REGISTRY", "127.0.0.1:5001")
REGISTRY_USERNAME = os.environ.get("SUPERBATCH_TEST_REGISTRY_USERNAME", "superbatch")
REGISTRY_PASSWORD = os.environ.get("SUPERBATCH_TEST_REGISTRY_PASSWORD", "superbatch-test-only")

PYTHON = shlex.quote(sys.executable)   # tasks run on this host, with this interpreter
_ids = itertools.count(1)


def py(code: str) -> str:
    """A task command line that runs ``code`` with the test's Python (no shell involved)."""
    return f"{PYTHON} -c {shlex.quote(code)}"


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}-{uuid.uuid4().hex[:6]}"


def pool_options(pool_id: str, dedicated: int = 2, low: int = 0, slots: int = 4, **extra):
    return bm.BatchPoolCreateOptions(
        id=pool_id, vm_size="standard_d2s_v3",
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(
                publisher="microsoft-dsvm", offer="ubuntu-hpc", sku="2404", version="latest"),
            node_agent_sku_id="batch.node.ubuntu 24.04",
            container_configuration=bm.BatchContainerConfiguration(type="dockerCompatible"),
        ),
        target_dedicated_nodes=dedicated, target_low_priority_nodes=low, task_slots_per_node=slots, **extra)


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_pool_steady(client, pool_id: str, timeout: float = 30.0):
    return wait_for(lambda: client.get_pool(pool_id).allocation_state == bm.AllocationState.STEADY
                    and client.get_pool(pool_id), timeout, what=f"pool {pool_id} steady")


def wait_job_done(client, job_id: str, timeout: float = 60.0) -> bm.BatchTaskCountsResult:
    """Poll task counts until no task is active or running."""
    def done():
        counts = client.get_job_task_counts(job_id)
        tc = counts.task_counts
        return counts if tc.active == 0 and tc.running == 0 else None
    return wait_for(done, timeout, interval=0.1, what=f"the tasks of job {job_id}")


def steady_pool(client, dedicated: int = 2, slots: int = 4, prefix: str = "pool") -> str:
    """A new pool's id, once it is steady with its nodes."""
    pool_id = unique(prefix)
    client.create_pool(pool_options(pool_id, dedicated=dedicated, slots=slots))
    wait_pool_steady(client, pool_id)
    return pool_id


def make_job(client, pool_id: str, **extra) -> str:
    job_id = unique("job")
    client.create_job(bm.BatchJobCreateOptions(id=job_id, pool_info=bm.BatchPoolInfo(pool_id=pool_id), **extra))
    return job_id


@pytest.fixture(scope="session")
def emulator():
    with start_batch_emulator(node_startup_delay=0.05, docker="off") as emu:
        yield emu


@pytest.fixture(scope="session")
def client(emulator):
    with emulator.client() as c:
        yield c


@pytest.fixture(scope="session")
def pool(client):
    """A steady pool of two dedicated nodes with four slots each."""
    return steady_pool(client, dedicated=2, slots=4)


@pytest.fixture
def job(client, pool):
    return make_job(client, pool)


@pytest.fixture(scope="session")
def azurite():
    if azurite_command() is None:
        missing(Need.AZURITE, "azurite-blob is not installed")
    with start_azurite() as storage:
        yield storage


# --- a Docker engine, its base image, the registry (missing ones: tests/support/needs.py) ---

@pytest.fixture(scope="session")
def docker_client():
    client, problem = connect_docker()
    if client is None:
        missing(Need.ENGINE, f"no Docker engine answers ({problem})")
    return client


@pytest.fixture(scope="session")
def base_image(docker_client):
    """The local image with python3 in it that container tasks run in."""
    import docker.errors

    try:
        docker_client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        missing(Need.BASE_IMAGE, f"the image {BASE_IMAGE} (with python3) is not in the engine")
    return BASE_IMAGE


@pytest.fixture(scope="session")
def registry(docker_client):
    """The local registry with a login; the engine is logged in to it."""
    import docker.errors

    check_registry(REGISTRY, REGISTRY_USERNAME, REGISTRY_PASSWORD)
    try:
        docker_client.api.login(REGISTRY_USERNAME, REGISTRY_PASSWORD, registry=REGISTRY, reauth=True)
    except docker.errors.APIError as e:
        refused(f"the engine's login of {REGISTRY_USERNAME} at {REGISTRY}", e)
    return REGISTRY


@pytest.fixture(scope="module")
def docker_emulator(docker_client):
    """An emulator of its own for each module, running tasks in containers."""
    with start_batch_emulator(docker="on") as emu:
        yield emu
