"""Container tasks: run in their image when a Docker engine answers.

Without an engine or the registry these tests skip with the reason outside
CI and fail under it; a missing image or a refused registry login always
fails (tests/support/needs.py).

The image is a local one with python3 in it: $SUPERBATCH_TEST_BASE_IMAGE
(default superbatch-base:bookworm, which .ci/setup-docker.sh builds). The
registry test pushes it to $SUPERBATCH_TEST_REGISTRY (a local registry with a
login) and lets the pool's containerRegistries credentials pull it.
"""

from __future__ import annotations

import json
import uuid

import pytest
from azure.batch import models as bm

from batch_emulator.execution import Runner

from .conftest import REGISTRY_PASSWORD, REGISTRY_USERNAME, pool_options, wait_job_done, wait_pool_steady


def test_docker_on_without_an_engine_is_an_error(monkeypatch, tmp_path):
    # A socket path where no engine listens, so the test runs with or without one.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(RuntimeError, match="no Docker engine"):
        Runner("on")


def container_pool(c, pool_id, images=(), registries=()):
    opts = pool_options(pool_id, dedicated=1, slots=2)
    opts.virtual_machine_configuration.container_configuration = bm.BatchContainerConfiguration(
        type="dockerCompatible", container_image_names=list(images), container_registries=list(registries))
    c.create_pool(opts)
    wait_pool_steady(c, pool_id, timeout=120)


def test_task_runs_in_its_image_with_the_working_dir_mounted(docker_emulator, base_image):
    with docker_emulator.client() as c:
        container_pool(c, "cpool", images=[base_image])
        c.create_job(bm.BatchJobCreateOptions(id="cjob", pool_info=bm.BatchPoolInfo(pool_id="cpool")))
        code = ("import os, json; open('made-in-container.txt', 'w').write('yes'); "
                "print(json.dumps({'cwd': os.getcwd(), 'wd': os.environ['AZ_BATCH_TASK_WORKING_DIR'], "
                "'task': os.environ['AZ_BATCH_TASK_ID'], 'mine': os.environ.get('MINE'), "
                "'container': os.path.exists('/.dockerenv')}))")
        c.create_tasks("cjob", [
            bm.BatchTaskCreateOptions(
                id="in-image", command_line=f"python3 -c {json.dumps(code)}",
                environment_settings=[bm.EnvironmentSetting(name="MINE", value="1")],
                container_settings=bm.BatchTaskContainerSettings(image_name=base_image,
                                                                 working_directory="taskWorkingDirectory")),
            bm.BatchTaskCreateOptions(
                id="exit-4", command_line="python3 -c 'raise SystemExit(4)'",
                container_settings=bm.BatchTaskContainerSettings(image_name=base_image)),
        ])
        wait_job_done(c, "cjob", timeout=120)
        t = c.get_task("cjob", "in-image")
        assert t.execution_info.result == "success", t.execution_info.failure_info
        assert t.execution_info.container_info.container_id
        out = json.loads(b"".join(c.download_task_file("cjob", "in-image", "stdout.txt")))
        assert out == {"cwd": out["wd"], "wd": out["wd"], "task": "in-image", "mine": "1", "container": True}
        assert b"".join(c.download_task_file("cjob", "in-image", "wd/made-in-container.txt")) == b"yes"
        assert c.get_task("cjob", "exit-4").execution_info.exit_code == 4


def test_private_registry_credentials_from_the_pool(docker_emulator, docker_client, base_image, registry):
    import docker.errors

    name = f"{registry}/batch-emulator-test"
    tag = uuid.uuid4().hex[:8]
    docker_client.images.get(base_image).tag(name, tag)
    auth = {"username": REGISTRY_USERNAME, "password": REGISTRY_PASSWORD}
    docker_client.images.push(name, tag=tag, auth_config=auth)
    docker_client.images.remove(f"{name}:{tag}")      # so the node has to pull it
    reference = f"{name}:{tag}"
    with docker_emulator.client() as c:
        for pool_id, password, expected in (("good-creds", REGISTRY_PASSWORD, "success"),
                                            ("bad-creds", "wrong-password", "failure")):
            credentials = bm.ContainerRegistryReference(registry_server=registry, username=REGISTRY_USERNAME,
                                                        password=password)
            container_pool(c, pool_id, registries=[credentials])
            job_id = f"job-{pool_id}"
            c.create_job(bm.BatchJobCreateOptions(id=job_id, pool_info=bm.BatchPoolInfo(pool_id=pool_id)))
            c.create_task(job_id, bm.BatchTaskCreateOptions(
                id="pulled", command_line="python3 -c 'print(1)'",
                container_settings=bm.BatchTaskContainerSettings(image_name=reference)))
            wait_job_done(c, job_id, timeout=120)
            info = c.get_task(job_id, "pulled").execution_info
            assert info.result == expected, info.failure_info
            if expected == "failure":
                assert info.failure_info.code == "ContainerPullImageFailed"
            try:
                docker_client.images.remove(reference)
            except docker.errors.ImageNotFound:
                pass


def test_task_user_identity_maps_into_the_container(docker_emulator, base_image):
    """As the service documents (batch-docker-container-workloads: Batch maps the
    task's user into the container; a pool-scope auto-user with admin elevation
    runs as root there): a non-admin task cannot write a root-owned file, an
    admin one can; both can write their own working directory."""
    code = ("import os, sys; open('mine.txt', 'w').write('ok'); print(os.getuid()); "
            "open('/etc/hostname', 'a').close(); print('wrote a root-owned file')")
    admin = bm.UserIdentity(auto_user=bm.AutoUserSpecification(scope="pool", elevation_level="admin"))
    nonadmin = bm.UserIdentity(auto_user=bm.AutoUserSpecification(scope="pool", elevation_level="nonadmin"))
    with docker_emulator.client() as c:
        container_pool(c, "upool", images=[base_image])
        c.create_job(bm.BatchJobCreateOptions(id="ujob", pool_info=bm.BatchPoolInfo(pool_id="upool")))
        settings = bm.BatchTaskContainerSettings(image_name=base_image, working_directory="taskWorkingDirectory")
        c.create_tasks("ujob", [
            bm.BatchTaskCreateOptions(id=name, command_line=f"python3 -c {json.dumps(code)}",
                                      container_settings=settings, user_identity=identity)
            for name, identity in (("admin", admin), ("nonadmin", nonadmin), ("default", None))
        ])
        wait_job_done(c, "ujob", timeout=120)
        admin_task = c.get_task("ujob", "admin")
        assert admin_task.execution_info.exit_code == 0, b"".join(c.download_task_file("ujob", "admin", "stderr.txt"))
        assert b"".join(c.download_task_file("ujob", "admin", "stdout.txt")).split() == [b"0", b"wrote", b"a", b"root-owned", b"file"]
        for name in ("nonadmin", "default"):  # the default identity is a non-admin pool auto-user
            task = c.get_task("ujob", name)
            assert task.execution_info.exit_code == 1
            stdout = b"".join(c.download_task_file("ujob", name, "stdout.txt")).split()
            assert len(stdout) == 1 and stdout[0] != b"0"   # ran as a non-root user, wrote its own directory
            assert b"PermissionError" in b"".join(c.download_task_file("ujob", name, "stderr.txt"))
            assert b"".join(c.download_task_file("ujob", name, "wd/mine.txt")) == b"ok"
