"""Fault-injected and large runs of `--backend azure` through the real CLI, on
Azurite and the Batch emulator (tests/azure's set-up, with faults turned on).

`make_cloud(...)` starts an emulator (with `faults=` and other emulator
options) and the two counting proxies; the blob proxy can fail a seeded share
of the kit's own blob requests.
"""

from __future__ import annotations

import shlex
import sys
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.azure.conftest import azurite, cloud_factory  # noqa: F401  (the session's Azurite, reused here)


def pytest_configure(config):
    config.addinivalue_line("markers", "scale: the 20,000-task run (about 5 minutes; -m \"not scale\" leaves it out)")


def kit_request(method: str, url: str) -> bool:
    """Whether a blob request is the kit's own rather than the emulator's download of a
    task's resource file. The emulator fetches resource files once, without retrying
    (the service retries them), so faults there would fail tasks, not test the kit."""
    query = parse_qs(urlsplit(url).query)
    return not (method == "GET" and query.get("sp") == ["r"])


@pytest.fixture
def make_cloud(azurite):  # noqa: F811
    with cloud_factory(azurite, may_fail=kit_request) as make:
        yield make


# What each task of these tests runs instead of worker.py (which tests/azure runs):
# the same file contract, without importing joblib (a quarter of a second of CPU
# per task on a small machine), so that a few hundred tasks cost seconds. It logs
# each run to the file the config names, and returns parameter * 3 as a pickle
# (joblib.load reads plain pickles); it sleeps config['sleep'] seconds first, if
# given. LOGGING_TASK below is the same task in task.py.
ONE_LINE_TASK = (
    "import pickle\n"
    "config = pickle.load(open('config.pickle', 'rb'))\n"
    "i = pickle.load(open('resource.pickle', 'rb'))\n"
    "if config.get('sleep'):\n"
    "    import time; time.sleep(config['sleep'])\n"
    "if config.get('log'):\n"
    "    with open(config['log'], 'a') as log: log.write(f'{i}\\n')\n"
    "pickle.dump(i * 3, open('output.pickle.partial', 'wb'))\n"
    "import os; os.replace('output.pickle.partial', 'output.pickle')\n"
)
TASK_COMMAND = f"{shlex.quote(sys.executable)} -S -E -c {shlex.quote(ONE_LINE_TASK)}"

LOGGING_TASK = """
    import time

    def global_config(): return {{"log": {log!r}, "sleep": {sleep}}}
    def parameters(): return list(range({count}))
    def task(config, i):
        time.sleep(config["sleep"])
        with open(config["log"], "a") as log:  # one line each time the task runs
            log.write(f"{{i}}\\n")
        return i * 3
    def aggregate(results): return sum(results)
"""

