"""--task-timeout with containers: the docker backend kills the container that
runs over time; on the Batch emulator (tasks in containers of the pushed
image) the service stops it at maxWallClockTime. Either way the task is
reported as timed out and every other task gives what the plain loop gives."""

import pytest

from tests.azure.conftest import azurite, make_cloud  # noqa: F401  (fixtures)
from tests.test_timeout import SLOW_INDEX, check_timed_out_run, expected_others, write_timeout_task

IMAGE = "superbatch-timeout:test"


@pytest.fixture
def slow_kit(kit, tmp_path, base_image):
    """The kit with task 3 sleeping 600 s, its image built; and the others' expected results."""
    expected = expected_others(kit, tmp_path)
    write_timeout_task(kit, 600)
    return kit, expected


def test_docker_kills_the_container_over_time(slow_kit, tmp_path, base_image, docker_client):
    kit, expected = slow_kit
    summary = tmp_path / "summary.json"
    done = kit.run("--backend", "docker", "--build", "--base-image", base_image, "--image", IMAGE, "--run", "slow",
                   "--workers", "2", "--task-timeout", "10s", "--summary-json", summary, timeout=600)
    check_timed_out_run(kit, done, "slow", expected, summary, limit="10s")
    assert docker_client.containers.list(all=True, filters={"label": "superbatch.run=slow"}) == []


def test_azure_containers_stopped_at_max_wall_clock_time(slow_kit, tmp_path, base_image, registry, make_cloud, docker_client):
    kit, expected = slow_kit
    image = f"{registry.server}/{IMAGE}"
    # the build-and-push run is a local run too: its slow task is stopped there
    pushed = kit.run("--run", "push", "--build", "--base-image", base_image, "--push", "--image", image,
                     "--task-timeout", "5s", "--allow-failures", env=registry.env(), timeout=600)
    assert pushed.returncode == 0, pushed.stderr
    cloud = make_cloud(docker="on")
    summary = tmp_path / "summary.json"
    done = kit.run("--backend", "azure", "--run", "slow", "--image", image, "--poll-interval", "0.2",
                   "--task-timeout", "10s", "--summary-json", summary, env={**cloud.env, **registry.env()}, timeout=600)
    check_timed_out_run(kit, done, "slow", expected, summary, limit="10s")
    tasks = {task.id: task for task in cloud.job_tasks("superbatch-slow")}
    assert tasks[f"slow-{SLOW_INDEX}"].execution_info.failure_info.code == "MaxWallClockTimeExceeded"
    for task in tasks.values():  # the documented way to root in a container, not --user 0:0
        assert task.user_identity.auto_user.scope == "pool" and task.user_identity.auto_user.elevation_level == "admin"
        assert not task.container_settings.container_run_options
