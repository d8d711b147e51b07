"""The job: the one file you edit.

superbatch runs task(global_config(), p) for every p in parameters(), each as
its own task (on this machine, in the worker image, or on Azure Batch), and
prints aggregate() of the results. Keep the four function names; change what
they do. Whatever they take and return must be picklable.

The example below is a sum of powers: each task draws 10 numbers from its own
seed and returns the sum of their cubes; the aggregate adds those sums up.
"""

import numpy as np


def global_config():
    """The object every task receives: settings, a model, a lookup table..."""
    return {"power": 3, "size": (10,)}


def parameters():
    """One item per task: task i receives the i-th item."""
    return [{"seed": seed} for seed in (1, 12, 123, 1234)]


def task(global_config, parameters):
    """One unit of work. Its return value is the task's result.

    Import here whatever the task needs, and list new packages in
    requirements-worker.txt so that the worker image has them too.
    """
    rng = np.random.default_rng(parameters["seed"])
    numbers = rng.random(global_config["size"])
    return float(np.sum(numbers ** global_config["power"]))


def aggregate(results):
    """Receives the results in task order; what it returns is printed."""
    return sum(results)
