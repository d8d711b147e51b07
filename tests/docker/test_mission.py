"""The whole cloud path in containers: build the worker image, push it to a
registry that needs a login, then `--backend azure` on Azurite and the Batch
emulator, which pulls the image from that registry with the pool's
credentials and runs every task in it. Same aggregate as the plain loop."""

import json

import pytest

from tests.azure.conftest import azurite, make_cloud  # noqa: F401  (fixtures)
from tests.kit import last_line, plain_loop
from tests.test_local import MIXED_TASK

IMAGE = "superbatch-mission:test"


@pytest.fixture
def container_cloud(make_cloud, docker_client):
    return make_cloud(docker="on")


def test_build_push_then_azure_runs_every_task_in_the_pulled_image(kit, container_cloud, registry, base_image, docker_client):
    kit.write_task(MIXED_TASK)
    image = f"{registry.server}/{IMAGE}"
    pushed = kit.run("--run", "build-and-push", "--build", "--base-image", base_image, "--push", "--image", image, env=registry.env())
    assert pushed.returncode == 0, pushed.stderr
    assert "test" in registry.tags("superbatch-mission")

    docker_client.images.remove(image, force=True)  # so the emulator must pull it
    cloud = container_cloud
    flags = ["--backend", "azure", "--run", "mission", "--image", image, "--poll-interval", "0.2"]  # default task command: the worker in the image
    done = kit.run(*flags, env={**cloud.env, **registry.env()}, timeout=600)
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == plain_loop(kit.path)

    docker_client.images.get(image)  # pulled back from the registry
    tasks = cloud.job_tasks("superbatch-mission")
    # worker.py's default, chunks: the first wave, one chunk per slot of the pool (here one), held all 16
    chunks = json.loads((kit.run_dir("mission") / "run.json").read_text())["backends"]["azure"]["chunks"]
    assert sorted(sum(last - first + 1 for first, last in ranges) for ranges in chunks.values()) == [16]
    assert sorted(task.id for task in tasks) == sorted(chunks)
    assert all(task.execution_info.container_info and task.execution_info.container_info.container_id for task in tasks)
    pool = cloud.emulator.client().get_pool("superbatch")
    [reference] = pool.virtual_machine_configuration.container_configuration.container_registries
    assert reference.registry_server == registry.server and reference.username == registry.username
