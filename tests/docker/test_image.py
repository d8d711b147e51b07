"""The worker image: what the Dockerfile puts in it, and that its worker
computes what the plain loop does."""

import importlib.util
import os
import re
import shlex

import joblib
import pytest

from constants import GLOBAL_CONFIG_FILE, TASK_OUTPUT_FILE, TASK_RESOURCE_FILE
from superbatch.errors import SuperbatchError
from superbatch.image import TASK_COMMAND_LINE, build
from tests.kit import REPO, Kit, plain_results


def load_module(path):
    spec = importlib.util.spec_from_file_location("repo_task", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_in_image(client, image, command, workdir=None, user=None) -> str:
    """stdout of `command` in a throwaway container of the image."""
    volumes = {str(workdir): {"bind": str(workdir), "mode": "rw"}} if workdir else None
    output = client.containers.run(image, command, working_dir=str(workdir) if workdir else None,
                                   volumes=volumes, user=user, remove=True, stdout=True, stderr=True)
    return output.decode()


def test_image_is_built_on_the_base_image_given_with_only_the_worker_inside(docker_client, base_image, worker_image):
    base_layers = docker_client.api.inspect_image(base_image)["RootFS"]["Layers"]
    image = docker_client.api.inspect_image(worker_image)
    assert image["RootFS"]["Layers"][: len(base_layers)] == base_layers  # FROM ${BASE_IMAGE} took the build argument
    assert image["Config"]["User"] not in ("", "root", "0")

    assert run_in_image(docker_client, worker_image, "id -u").strip() != "0"
    assert run_in_image(docker_client, worker_image, "ls -A /app").split() == ["constants.py", "task.py", "worker.py"]
    # The worker's and the task's pinned dependencies, and nothing of the controller's.
    pins = dict(line.split("==") for line in (REPO / "requirements-worker.txt").read_text().splitlines() if "==" in line)
    versions = run_in_image(docker_client, worker_image, ["python", "-c", "import joblib, numpy; print(joblib.__version__, numpy.__version__)"])
    assert versions.split() == [pins["joblib"], pins["numpy"]]
    missing = run_in_image(docker_client, worker_image, ["python", "-c", "import importlib.util as u; print([m for m in ('azure', 'docker', 'pytest', 'superbatch') if u.find_spec(m)])"])
    assert missing.strip() == "[]"


def test_worker_in_the_image_gives_the_plain_loops_results(docker_client, worker_image, tmp_path):
    task = load_module(REPO / "task.py")  # only to stage its inputs; the truth comes from the plain loop
    truth = plain_results(REPO, tmp_path)
    config = task.global_config()
    outputs = []
    for index, parameters in enumerate(task.parameters()):
        workdir = tmp_path / f"task_{index}"
        workdir.mkdir()
        joblib.dump(config, workdir / GLOBAL_CONFIG_FILE)
        joblib.dump(parameters, workdir / TASK_RESOURCE_FILE)
        # What a Batch task runs: the task command line, in the task's working directory.
        run_in_image(docker_client, worker_image, shlex.split(TASK_COMMAND_LINE), workdir=workdir, user=f"{os.getuid()}:{os.getgid()}")
        outputs.append(joblib.load(workdir / TASK_OUTPUT_FILE))
    assert outputs == truth


def test_the_images_own_user_can_run_a_task_in_a_writable_directory(docker_client, worker_image, tmp_path):
    """Batch may run the container as the image's user: the command line must work for it too."""
    workdir = tmp_path / "task"
    workdir.mkdir()
    joblib.dump({"power": 2, "size": (3,)}, workdir / GLOBAL_CONFIG_FILE)
    joblib.dump({"seed": 5}, workdir / TASK_RESOURCE_FILE)
    os.chmod(workdir, 0o777)
    run_in_image(docker_client, worker_image, shlex.split(TASK_COMMAND_LINE), workdir=workdir)
    assert joblib.load(workdir / TASK_OUTPUT_FILE) > 0


def test_a_failed_build_names_the_failing_step_in_one_line(docker_client, base_image, worker_image, tmp_path, capfd):
    kit = Kit(tmp_path)  # worker_image first: the steps before the failing one are cached
    (kit.path / "worker.py").unlink()
    with pytest.raises(SuperbatchError) as raised:
        build(kit.path, "superbatch-broken-test:latest", base_image=base_image, quiet=True, client=docker_client)
    message = str(raised.value)
    assert "\n" not in message
    assert re.search(r"failed at Step \d+/\d+ : COPY constants\.py worker\.py task\.py /app/", message), message
    assert "worker.py" in message.split(": ", 1)[1]


# On a closed port of this machine: the engine's pull fails at once, and asks no public registry.
NO_SUCH_BASE = "127.0.0.1:9/superbatch-no-such-base:never"


def test_a_missing_base_image_suggests_base_image(docker_client, tmp_path):
    kit = Kit(tmp_path)
    with pytest.raises(SuperbatchError) as raised:
        build(kit.path, "superbatch-broken-test:latest", base_image=NO_SUCH_BASE, quiet=True, client=docker_client)
    assert f"BASE_IMAGE={NO_SUCH_BASE}" in str(raised.value)
    assert "--base-image" in str(raised.value)
