"""The worker image through the Docker engine (docker SDK): its size, a first
build, a rebuild after a task.py edit, a rebuild with nothing changed, and the
cost of one container from creation to removal.

  size             the built image's and the base's size as the engine reports
                   them (MB = 10^6 bytes, as `docker images` shows)
  first build      the kit's Dockerfile on a copy of the kit, the base present
                   and nothing else cached (nocache: pip downloads and installs
                   requirements-worker.txt each round)
  rebuild, edit    the kit's own build (superbatch.image.build) after a new
                   line is appended to task.py: the cached layers are reused
  rebuild, same    the same build again with nothing changed
  container        create, start, wait for and remove a container of the image
                   running `true`, as the docker backend does for each task
                   (as the host user); its cost on top of the task itself

Each figure is the median over rounds with its min–max range.

    python -m bench.docker [--rounds 5] [--base-image superbatch-base:bookworm]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.stats import Spread
from tests.kit import Kit

BASE_IMAGE = os.environ.get("SUPERBATCH_TEST_BASE_IMAGE", "superbatch-base:bookworm")
IMAGE = "superbatch-bench:latest"  # the bench's own name: no test's image is touched
CONTAINERS_PER_ROUND = 4


@dataclass
class ImageResult:
    base_image: str
    base_mb: float
    image_mb: float
    first_build: Spread
    rebuild_edit: Spread
    rebuild_same: Spread
    container: Spread


def unavailable(base_image: str = BASE_IMAGE) -> tuple[object, str | None]:
    """(a client, None), or (None, why these figures cannot be measured here)."""
    from superbatch.errors import SuperbatchError
    from superbatch.image import docker_client, image_exists

    try:
        client = docker_client()
    except SuperbatchError as error:
        return None, str(error)
    if not image_exists(client, base_image):
        return None, f"the base image {base_image} is not in the Docker engine (.ci/setup-docker.sh builds it)"
    return client, None


def first_build(client, kit_dir: Path, base_image: str) -> tuple[float, str]:
    """A build with no cache but the base: the same call as superbatch.image.build, plus nocache."""
    started = time.perf_counter()
    image_id = None
    for message in client.api.build(path=str(kit_dir), tag=IMAGE, buildargs={"BASE_IMAGE": base_image},
                                    rm=True, forcerm=True, nocache=True, decode=True, timeout=None):
        if "error" in message:
            raise RuntimeError(f"building {IMAGE} failed: {message['error']}")
        if "aux" in message and "ID" in message["aux"]:
            image_id = message["aux"]["ID"]
    return time.perf_counter() - started, image_id or client.api.inspect_image(IMAGE)["Id"]


def kit_build(client, kit_dir: Path, base_image: str) -> tuple[float, str]:
    from superbatch.image import build

    started = time.perf_counter()
    image_id = build(kit_dir, IMAGE, base_image=base_image, quiet=True, client=client)
    return time.perf_counter() - started, image_id


def container_cost(client) -> float:
    started = time.perf_counter()
    container = client.containers.create(IMAGE, command=["true"], user=f"{os.getuid()}:{os.getgid()}", detach=True)
    try:
        container.start()
        code = container.wait(timeout=None)["StatusCode"]
    finally:
        container.remove(force=True)
    if code != 0:
        raise RuntimeError(f"a container of {IMAGE} running `true` exited with {code}")
    return time.perf_counter() - started


def remove(client, image_ids: list) -> None:
    """The images this bench built, newest first (a child before its parent)."""
    from docker.errors import APIError

    for image_id in reversed(image_ids):
        try:
            client.api.remove_image(image_id, force=True)
        except APIError:  # already gone with a later one, or shared: nothing of ours to keep
            pass
    image_ids.clear()


def measure(rounds: int = 5, base_image: str = BASE_IMAGE, say=print) -> ImageResult | str:
    """Every image figure, or the reason they cannot be measured here."""
    client, reason = unavailable(base_image)
    if reason:
        return reason
    times: dict = {"first": [], "edit": [], "same": [], "container": []}
    built: list = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-docker-") as folder:
            kit = Kit(Path(folder))
            task = kit.path / "task.py"
            for round_ in range(rounds):
                remove(client, built)
                seconds, image_id = first_build(client, kit.path, base_image)
                times["first"].append(seconds)
                built.append(image_id)
                seconds, image_id = kit_build(client, kit.path, base_image)
                times["same"].append(seconds)
                built.append(image_id)
                with task.open("a") as source:
                    source.write(f"\n# an edit, round {round_}\n")
                seconds, image_id = kit_build(client, kit.path, base_image)
                times["edit"].append(seconds)
                built.append(image_id)
                times["container"].extend(container_cost(client) for _ in range(CONTAINERS_PER_ROUND))
                say(f"  round {round_ + 1}: first build {times['first'][-1]:.1f} s, rebuild after edit {times['edit'][-1]:.2f} s, "
                    f"unchanged {times['same'][-1]:.2f} s, container {times['container'][-1]:.2f} s")
            size = client.api.inspect_image(IMAGE)["Size"] / 1e6
            base_size = client.api.inspect_image(base_image)["Size"] / 1e6
    finally:
        remove(client, built)
        client.close()
    return ImageResult(base_image, base_size, size, Spread(times["first"]), Spread(times["edit"]),
                       Spread(times["same"]), Spread(times["container"]))


def report(result: ImageResult | str) -> list:
    if isinstance(result, str):
        return [f"image figures not measured: {result}"]
    return [
        f"image size: {result.image_mb:.0f} MB ({result.base_mb:.0f} MB base {result.base_image} "
        f"+ {result.image_mb - result.base_mb:.0f} MB added)",
        f"first build, base present: {result.first_build.text('.1f', ' s')}",
        f"rebuild after a task.py edit: {result.rebuild_edit.text('.2f', ' s')}",
        f"rebuild with nothing changed: {result.rebuild_same.text('.2f', ' s')}",
        f"one container, create to removal: {result.container.text('.2f', ' s')} ({len(result.container.values)} containers)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--base-image", default=BASE_IMAGE)
    options = parser.parse_args()
    result = measure(options.rounds, options.base_image, say=lambda m: print(m, file=sys.stderr))
    print(f"# the worker image, medians (min–max) of {options.rounds} rounds, {time.strftime('%Y-%m-%d')}")
    for line in report(result):
        print(line)


if __name__ == "__main__":
    main()
