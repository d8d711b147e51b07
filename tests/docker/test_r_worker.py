"""The R example (examples/r/) in its own worker image, built on an R base
image (.ci/setup-docker.sh makes it: the base image with Debian's R and
jsonlite): on the docker backend, and on the azure backend against Azurite
and the Batch emulator, which pulls the image from a registry with a login
and runs every task in it. Same aggregate as the R task written in Python."""

import os

import pytest

from superbatch.image import image_exists
from tests.azure.conftest import azurite, make_cloud  # noqa: F401  (fixtures)
from tests.kit import last_line
from tests.r_example import make_task_3_fail, r_kit, reference_aggregate  # noqa: F401  (fixture)
from tests.support.needs import Need, missing

R_BASE_IMAGE = os.environ.get("SUPERBATCH_TEST_R_BASE_IMAGE", "superbatch-r-base:bookworm")
IMAGE = "superbatch-r-worker:test"


@pytest.fixture(scope="module")
def r_base_image(docker_client):
    if not image_exists(docker_client, R_BASE_IMAGE):
        missing(Need.BASE_IMAGE, f"the R base image {R_BASE_IMAGE} is not in the Docker engine")
    return R_BASE_IMAGE


def test_the_r_example_in_its_image_on_the_docker_backend(r_kit, r_base_image):
    done = r_kit.run("--backend", "docker", "--build", "--base-image", r_base_image, "--image", IMAGE, "--run", "r-docker", "--workers", "4")
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == reference_aggregate()

    make_task_3_fail(r_kit)
    failing = r_kit.run("--backend", "docker", "--build", "--base-image", r_base_image, "--image", IMAGE, "--run", "r-docker-fails", "--workers", "4", "--quiet")
    assert failing.returncode == 1
    assert "1 of 8 tasks failed (first: task 3, exit code 1)" in failing.stderr
    assert "Error in the R task: no result for the block at 6001" in failing.stderr


def test_the_r_example_on_the_azure_backend_in_its_pulled_image(r_kit, make_cloud, registry, r_base_image, docker_client):
    image = f"{registry.server}/{IMAGE}"
    built = r_kit.run("--backend", "docker", "--run", "build-and-push", "--build", "--base-image", r_base_image, "--push", "--image", image,
                      "--workers", "4", env=registry.env())
    assert built.returncode == 0, built.stderr

    docker_client.images.remove(image, force=True)  # so the emulator must pull it
    cloud = make_cloud(docker="on")
    done = r_kit.run("--backend", "azure", "--run", "r-azure", "--image", image, "--poll-interval", "0.2",
                     env={**cloud.env, **registry.env()}, timeout=600)  # no --task-command: task.py's WORKER in the image
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == reference_aggregate()

    tasks = cloud.job_tasks("superbatch-r-azure")
    assert len(tasks) == 8
    assert {task.command_line for task in tasks} == {"Rscript /app/worker.R"}
    assert all(task.execution_info.container_info and task.execution_info.container_info.container_id for task in tasks)
    assert {file.file_path for file in tasks[0].resource_files} == {"config.json", "resource.json"}
