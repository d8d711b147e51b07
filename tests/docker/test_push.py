"""--build --push to a registry with a login, the way the image goes to Azure Container Registry."""

import os
import shlex
import uuid
from pathlib import Path

import joblib
import pytest

from constants import GLOBAL_CONFIG_FILE, TASK_OUTPUT_FILE, TASK_RESOURCE_FILE
from superbatch.errors import SuperbatchError
from superbatch.image import TASK_COMMAND_LINE, push
from tests.kit import last_line, plain_loop

REPOSITORY = "superbatch-push-test"


def files_containing(folder: Path, secret: str) -> list:
    return [path for path in folder.rglob("*") if path.is_file() and secret.encode() in path.read_bytes()]


def test_build_and_push_to_a_registry_with_a_login(kit, docker_client, base_image, registry, worker_image):
    tag = uuid.uuid4().hex[:12]
    image = f"{REPOSITORY}:{tag}"
    result = kit.run("--backend", "docker", "--build", "--base-image", base_image, "--push", "--image", image, "--run", "pushed",
                     env=registry.env())
    assert result.returncode == 0, result.stderr
    assert f"pushed {registry.server}/{image}" in result.stderr
    assert last_line(result.stdout) == plain_loop(kit.path)
    assert tag in registry.tags(REPOSITORY)

    # What a pool does: pull it back from the registry with the login.
    pushed = f"{registry.server}/{REPOSITORY}"
    docker_client.api.remove_image(f"{pushed}:{tag}")
    docker_client.api.pull(pushed, tag, auth_config={"username": registry.username, "password": registry.password})
    assert docker_client.api.inspect_image(f"{pushed}:{tag}")["Id"] == docker_client.api.inspect_image(image)["Id"]

    # The password went to the engine only.
    assert registry.password not in result.stdout + result.stderr
    assert files_containing(kit.path, registry.password) == []
    docker_config = Path.home() / ".docker" / "config.json"
    assert not docker_config.exists() or registry.password not in docker_config.read_text()

    for name in (f"{pushed}:{tag}", image):
        docker_client.api.remove_image(name)  # untags only: the layers are the session image's


def test_a_wrong_password_fails_clearly_before_any_task_runs(kit, registry, worker_image):
    wrong = f"wrong-{uuid.uuid4().hex}"
    result = kit.run("--backend", "docker", "--push", "--image", worker_image, "--run", "refused", env=registry.env(password=wrong))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert f"{registry.server} refused the login of {registry.username!r}" in errors[0]
    assert "REGISTRY_PASSWORD" in errors[0]
    assert wrong not in result.stdout + result.stderr
    assert files_containing(kit.path, wrong) == []
    assert not kit.run_dir("refused").joinpath("task_0_output.pickle").exists()


def test_push_without_a_registry_server_says_what_is_missing(kit, docker_client, worker_image):
    result = kit.run("--backend", "docker", "--push", "--image", worker_image, "--run", "no-server", env={"REGISTRY_SERVER": ""})
    assert result.returncode == 1
    assert "error: --push needs REGISTRY_SERVER" in result.stderr


def test_a_task_runs_in_the_image_pulled_from_the_registry(docker_client, registry_image, tmp_path):
    """What a Batch node does with the pool's image: pull it with the registry's login, run a task in it."""
    repository, tag = registry_image.name.rsplit(":", 1)
    assert repository.startswith(registry_image.registry.server + "/")
    docker_client.api.remove_image(registry_image.name)
    login = {"username": registry_image.registry.username, "password": registry_image.registry.password}
    docker_client.api.pull(repository, tag, auth_config=login)

    joblib.dump({"power": 1, "size": (4,)}, tmp_path / GLOBAL_CONFIG_FILE)
    joblib.dump({"seed": 7}, tmp_path / TASK_RESOURCE_FILE)
    docker_client.containers.run(registry_image.name, shlex.split(TASK_COMMAND_LINE), working_dir=str(tmp_path),
                                 volumes={str(tmp_path): {"bind": str(tmp_path), "mode": "rw"}},
                                 user=f"{os.getuid()}:{os.getgid()}", remove=True)
    assert 0 < joblib.load(tmp_path / TASK_OUTPUT_FILE) < 4  # the sum of 4 numbers drawn from [0, 1)


def test_pushing_to_a_registry_that_is_not_there_says_so(docker_client, worker_image):
    with pytest.raises(SuperbatchError) as raised:
        push(worker_image, quiet=True, client=docker_client,
             environ={"REGISTRY_SERVER": "127.0.0.1:9", "REGISTRY_USERNAME": "someone", "REGISTRY_PASSWORD": "anything"})
    assert str(raised.value).startswith("--push: could not log in to 127.0.0.1:9 (")
    assert "check REGISTRY_SERVER" in str(raised.value)
