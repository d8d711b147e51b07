"""Container images as a Batch node meets them: a pull that fails when the
node starts, and the node's own image cache.

Real parts only: the emulator with a Docker engine, the local registry with
a login, and tiny images made from the base image with one marker file.
Without an engine or the registry these skip outside CI and fail under it
(tests/support/needs.py).
"""

from __future__ import annotations

import io
import tarfile
import uuid

import pytest
from azure.batch import models as bm

from .conftest import (REGISTRY, REGISTRY_PASSWORD, REGISTRY_USERNAME, pool_options, wait_for, wait_job_done,
                       wait_pool_steady)


def credentials(password=REGISTRY_PASSWORD):
    return [bm.ContainerRegistryReference(registry_server=REGISTRY, username=REGISTRY_USERNAME, password=password)]


def push_marked(client, base: str, repository: str, tag: str, marker: str) -> str:
    """Push an image that is ``base`` plus /marker holding ``marker`` as
    repository:tag; its digest reference (repository@sha256:…)."""
    data = marker.encode()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        entry = tarfile.TarInfo("marker")
        entry.size = len(data)
        tar.addfile(entry, io.BytesIO(data))
    container = client.containers.create(base, command=["true"])
    try:
        container.put_archive("/", archive.getvalue())
        image = container.commit(repository=repository, tag=tag)
    finally:
        container.remove(force=True)
    for chunk in client.images.push(repository, tag=tag, stream=True, decode=True,
                                    auth_config={"username": REGISTRY_USERNAME, "password": REGISTRY_PASSWORD}):
        assert "error" not in chunk, chunk
    digests = client.images.get(image.id).attrs["RepoDigests"]
    return next(d for d in digests if d.startswith(repository + "@"))


def image_pool(c, pool_id, images, registries):
    opts = pool_options(pool_id, dedicated=1, slots=1)
    opts.virtual_machine_configuration.container_configuration = bm.BatchContainerConfiguration(
        type="dockerCompatible", container_image_names=images, container_registries=registries)
    c.create_pool(opts)
    return wait_pool_steady(c, pool_id, timeout=120)


def marker_task(task_id: str, image: str):
    return bm.BatchTaskCreateOptions(id=task_id, command_line="cat /marker",
                                     container_settings=bm.BatchTaskContainerSettings(image_name=image))


def run_marker(c, job_id: str, task_id: str, image: str) -> str:
    """Run ``cat /marker`` in ``image`` on the job's pool; what it printed."""
    c.create_task(job_id, marker_task(task_id, image))
    wait_job_done(c, job_id, timeout=120)
    info = c.get_task(job_id, task_id).execution_info
    assert info.result == "success", info.failure_info
    return b"".join(c.download_task_file(job_id, task_id, "stdout.txt")).decode()


def assert_unusable_and_idle(c, pool_id: str, image: str, code: str):
    """The pool's one node is unusable with an error naming ``image``, still
    counted in the pool, and a task given to the pool never starts."""
    node = wait_for(lambda: next((n for n in c.list_nodes(pool_id) if n.state == "unusable"), None),
                    timeout=60, what=f"an unusable node in {pool_id}")
    assert len(node.errors) == 1, node.errors
    error = node.errors[0]
    assert error.code == code
    assert image in error.message
    assert {d.name: d.value for d in error.error_details}["ContainerImage"] == image
    pool = c.get_pool(pool_id)
    assert pool.allocation_state == bm.AllocationState.STEADY
    assert pool.current_dedicated_nodes == 1      # still in the pool, still billed
    job_id = f"job-{pool_id}"
    c.create_job(bm.BatchJobCreateOptions(id=job_id, pool_info=bm.BatchPoolInfo(pool_id=pool_id)))
    c.create_task(job_id, bm.BatchTaskCreateOptions(id="waits", command_line="true"))
    with pytest.raises(AssertionError, match="timed out"):
        wait_for(lambda: c.get_task(job_id, "waits").state != bm.BatchTaskState.ACTIVE, timeout=2,
                 what="the task to leave active")
    assert c.get_node(pool_id, node.id).state == "unusable"


def test_an_image_never_pushed_makes_the_node_unusable(docker_emulator, registry):
    image = f"{registry}/never-pushed-{uuid.uuid4().hex[:8]}:v1"
    with docker_emulator.client() as c:
        image_pool(c, "missing-image", [image], credentials())
        assert_unusable_and_idle(c, "missing-image", image, "ContainerInvalidImage")


def test_a_wrong_registry_password_makes_the_node_unusable(docker_emulator, docker_client, base_image, registry):
    repository = f"{registry}/images-login-{uuid.uuid4().hex[:8]}"
    push_marked(docker_client, base_image, repository, "v1", "pushed")
    docker_client.images.remove(f"{repository}:v1")   # so nothing local can stand in for it
    image = f"{repository}:v1"
    with docker_emulator.client() as c:
        image_pool(c, "wrong-login", [image], credentials(password="not-the-password"))
        assert_unusable_and_idle(c, "wrong-login", image, "ContainerInvalidRegistry")


def test_a_node_keeps_the_image_it_pulled_for_a_tag(docker_emulator, docker_client, base_image, registry):
    repository = f"{registry}/images-cache-{uuid.uuid4().hex[:8]}"
    image = f"{repository}:v1"
    push_marked(docker_client, base_image, repository, "v1", "image A")
    with docker_emulator.client() as c:
        image_pool(c, "tag-cache", [image], credentials())
        c.create_job(bm.BatchJobCreateOptions(id="job-cache", pool_info=bm.BatchPoolInfo(pool_id="tag-cache")))
        assert run_marker(c, "job-cache", "first", image) == "image A"

        # Someone pushes a new image under the same tag; the engine's own
        # repository:v1 now names it too.
        digest_b = push_marked(docker_client, base_image, repository, "v1", "image B")
        assert run_marker(c, "job-cache", "after-push", image) == "image A"
        assert run_marker(c, "job-cache", "by-digest", digest_b) == "image B"

        # A node that starts now pulls the tag afresh and gets B: the tag
        # really moved in the registry.
        image_pool(c, "fresh-node", [image], credentials())
        c.create_job(bm.BatchJobCreateOptions(id="job-fresh", pool_info=bm.BatchPoolInfo(pool_id="fresh-node")))
        assert run_marker(c, "job-fresh", "fresh", image) == "image B"
        nodes = list(c.list_nodes("tag-cache"))
        assert [n.state for n in nodes] == ["idle"] and not nodes[0].errors
