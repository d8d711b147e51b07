"""The R example (examples/r/) in a kit copy, and its task written in Python:
the reference loop its aggregate must match on every backend."""

import importlib.util
import shutil
import subprocess

import pytest

from tests.kit import REPO, Kit
from tests.support.needs import Need, missing

EXAMPLE = REPO / "examples" / "r"


def install_r_example(kit: Kit) -> None:
    """Copy examples/r/ over the kit's top level, as the README tells a user to."""
    for path in EXAMPLE.iterdir():
        shutil.copy(path, kit.path / path.name)


def needs_r() -> None:
    found = shutil.which("Rscript") and subprocess.run(["Rscript", "-e", "library(jsonlite)"], capture_output=True).returncode == 0
    if not found:
        missing(Need.R, "Rscript with the jsonlite package is not on this machine")


def _collatz_steps(n: int) -> int:
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def reference_task(global_config: dict, parameters: dict) -> dict:
    """task.R's task(), in Python."""
    starts = range(parameters["first"], parameters["first"] + global_config["block_size"])
    steps = [_collatz_steps(n) for n in starts]
    best = steps.index(max(steps))  # the first on a tie, as which.max
    return {"start": starts[best], "steps": steps[best], "mean_steps": sum(steps) / len(steps)}


def reference_aggregate() -> str:
    """What the plain loop over the R example prints, with the task in Python."""
    spec = importlib.util.spec_from_file_location("r_example_task", EXAMPLE / "task.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.global_config()
    return str(module.aggregate([reference_task(config, parameters) for parameters in module.parameters()]))


FAILING_TASK_R = """
original_task <- task
task <- function(global_config, parameters) {
  if (parameters$first == 6001) stop("no result for the block at ", parameters$first)
  original_task(global_config, parameters)
}
"""


def make_task_3_fail(kit: Kit) -> None:
    """task.R's task() stops with an R error for task 3 (the block at 6001)."""
    with open(kit.path / "task.R", "a") as file:
        file.write(FAILING_TASK_R)


@pytest.fixture
def r_kit(kit):
    install_r_example(kit)
    return kit
