"""Never old code, with containers: Azurite, the Batch emulator running every
task in a container pulled from a registry with a login, and a real engine.

- task.py fixed, the image rebuilt and pushed under the SAME tag, the run
  resumed: every task that runs again runs the new code, on a pool whose node
  pulled the old image under that tag (the emulator's nodes keep what they
  pulled, as Batch nodes do), because tasks name the image by digest;
- pre-flight: a task.py that fails in the image stops the run before the
  image is pushed or anything is created in the cloud;
- an image of another platform than Batch's (linux/amd64) is never pushed.
"""

import hashlib
import io
import json
import tarfile
import uuid

import pytest

from tests.azure.conftest import azurite, make_cloud  # noqa: F401  (fixtures)
from tests.kit import last_line, plain_results

# A name of this session's own: the registry keeps what earlier sessions pushed,
# and the tests assert what this one did (or did not) push.
REPOSITORY = f"superbatch-never-old-{uuid.uuid4().hex[:8]}"
READS = {"GET", "HEAD"}  # what backend.check() may send: it creates nothing

OLD = """
def global_config(): return {"offset": 100}
def parameters(): return list(range(6))
def task(config, p):
    if p % 2:
        raise ValueError(f"the old code fails on {p}")
    return ("old", p + config["offset"])
def aggregate(results): return results
"""
NEW = OLD.replace('raise ValueError(f"the old code fails on {p}")', 'return ("new", p * 1000)')

BROKEN = """
def global_config(): return 1
def parameters(): return [1, 2, 3]
def task(config, p): raise RuntimeError("task.py is broken in the image")
def aggregate(results): return sum(results)
"""


@pytest.fixture
def container_cloud(make_cloud, docker_client):
    return make_cloud(docker="on")


def errors_of(done) -> list:
    return [line for line in done.stderr.splitlines() if line.startswith("error:")]


def test_a_rerun_after_a_push_under_the_same_tag_runs_the_new_code_on_nodes_that_cached_the_old(
        kit, container_cloud, registry, base_image, docker_client, tmp_path):
    cloud = container_cloud
    image = f"{registry.server}/{REPOSITORY}:same"
    env = {**cloud.env, **registry.env()}
    # A fixed pool: its nodes stay between the runs, holding the old image under the tag
    # (an elastic pool would drain them and start fresh nodes that pull the new one).
    flags = ["--backend", "azure", "--run", "again", "--image", image, "--poll-interval", "0.2", "--fixed-pool",
             "--build", "--base-image", base_image, "--push"]
    summary = tmp_path / "summary.json"

    kit.write_task(OLD)
    first = kit.run(*flags, "--summary-json", summary, env=env, timeout=600)
    assert first.returncode == 1, first.stderr
    assert errors_of(first)[0].startswith("error: 3 of 6 tasks failed (first: task 1")
    old_outputs = kit.outputs("again")
    assert sorted(old_outputs) == [0, 2, 4]
    client = cloud.emulator.client()
    nodes = sorted(node.id for node in client.list_nodes("superbatch"))
    assert nodes  # these nodes pulled the old image under the tag
    [old_digest] = {task.container_settings.image_name for task in cloud.job_tasks("superbatch-again")}
    assert old_digest.startswith(f"{registry.server}/{REPOSITORY}@sha256:")
    assert json.loads(summary.read_text())["images"] == {old_digest: [0, 1, 2, 3, 4, 5]}

    kit.write_task(NEW)  # the fix, rebuilt and pushed under the same tag
    second = kit.run(*flags, "--summary-json", summary, env=env, timeout=600)
    assert second.returncode == 0, second.stderr
    outputs = kit.outputs("again")
    # What the plain loop of each version gives: kept outputs are the old
    # code's, every task that ran again gives what only the new code returns.
    new_truth = plain_results(kit.path, tmp_path)
    assert {index: outputs[index] for index in (1, 3, 5)} == {index: new_truth[index] for index in (1, 3, 5)}
    assert all(outputs[index][0] == "new" for index in (1, 3, 5))
    assert {index: outputs[index] for index in (0, 2, 4)} == old_outputs
    assert last_line(second.stdout) == str([outputs[index] for index in range(6)])

    assert sorted(node.id for node in client.list_nodes("superbatch")) == nodes  # the same nodes, old tag cached
    [new_digest] = {task.container_settings.image_name for task in cloud.job_tasks("superbatch-again__2")}
    assert new_digest.startswith(f"{registry.server}/{REPOSITORY}@sha256:") and new_digest != old_digest
    assert new_digest in docker_client.images.get(image).attrs["RepoDigests"]  # the image just built and pushed
    images = json.loads(summary.read_text())["images"]
    assert images == {old_digest: [0, 2, 4], new_digest: [1, 3, 5]}
    journal = json.loads((kit.run_dir("again") / "run.json").read_text())
    assert journal["backends"]["azure"]["image"] == new_digest
    assert journal["backends"]["azure"]["images"] == {old_digest: [[0, 0], [2, 2], [4, 4]], new_digest: [[1, 1], [3, 3], [5, 5]]}


def requests_seen(cloud) -> set:
    return {method for method, _ in cloud.batch.arrivals} | {method for method, _ in cloud.blobs.arrivals}


def test_preflight_stops_a_broken_task_before_any_push_or_cloud_change(kit, make_cloud, registry, base_image):
    cloud = make_cloud()
    image = f"{registry.server}/{REPOSITORY}-broken:1"
    kit.write_task(BROKEN)
    done = kit.run("--backend", "azure", "--run", "broken", "--image", image, "--build", "--base-image", base_image,
                   "--push", "--poll-interval", "0.2", env={**cloud.env, **registry.env()}, timeout=600)
    assert done.returncode == 1
    assert not any(line.startswith("Traceback") for line in done.stderr.splitlines())  # the task's own is indented, in the tail
    [error] = errors_of(done)
    assert error == (f"error: pre-flight: task 0 exited with code 1 in the image {image}; nothing was pushed or "
                     "created in the cloud; fix task.py (or the image's dependencies) and run again; last lines of its stderr:")
    assert "RuntimeError: task.py is broken in the image" in done.stderr
    assert registry.tags(f"{REPOSITORY}-broken") == []  # never pushed
    assert requests_seen(cloud) <= READS, (cloud.batch.arrivals, cloud.blobs.arrivals)  # only check()'s reads
    assert list(cloud.emulator.client().list_jobs()) == []

    # --preflight: the same for an image that is already built.
    again = kit.run("--backend", "azure", "--run", "broken", "--image", image, "--preflight",
                    "--poll-interval", "0.2", env={**cloud.env, **registry.env()}, timeout=600)
    assert again.returncode == 1
    assert errors_of(again) == [error]
    assert requests_seen(cloud) <= READS
    assert list(cloud.emulator.client().list_pools()) == []


def arm64_image(client, name: str) -> None:
    """A one-file image whose config says linux/arm64, loaded as `docker load`
    would (the engine here ignores --platform on import and on builds FROM scratch)."""
    def tar_of(files: dict) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for path, data in files.items():
                info = tarfile.TarInfo(path)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    layer = tar_of({"hello.txt": b"arm64"})
    config = json.dumps({"architecture": "arm64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [name], "Layers": ["layer.tar"]}]).encode()
    client.images.load(tar_of({config_name: config, "layer.tar": layer, "manifest.json": manifest}))


def test_an_image_for_another_platform_is_never_pushed(kit, docker_client, registry):
    name = f"{REPOSITORY}-arm64:1"
    arm64_image(docker_client, name)
    try:
        assert docker_client.api.inspect_image(name)["Architecture"] == "arm64"
        done = kit.run("--backend", "docker", "--run", "arm", "--image", name, "--push", env=registry.env())
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert errors_of(done) == [
            f"error: --push: {name} would not run on Azure Batch: it is a linux/arm64 image and Batch nodes run "
            "linux/amd64 (x86-64); rebuild it with --build, which builds for linux/amd64"]
        assert registry.tags(f"{REPOSITORY}-arm64") == []
    finally:
        docker_client.images.remove(name, force=True)



def test_a_tag_is_resolved_to_the_digest_the_registry_holds_now(registry, registry_image, docker_client):
    """What a run without --push does: the registry's HEAD of the tag's manifest,
    with the login, names the digest the engine got when it pushed."""
    from superbatch.backends.azure.digests import resolve

    pushed = docker_client.images.get(registry_image.name).attrs["RepoDigests"]
    assert resolve(registry_image.name, registry.username, registry.password, registry.server) in [(digest, None) for digest in pushed]
    assert resolve(registry_image.name, None, None, registry.server) == (
        None, f"the registry {registry.server} refused to show it (401); check REGISTRY_USERNAME and REGISTRY_PASSWORD")
