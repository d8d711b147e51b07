"""The azure backend against real local servers: Azurite (blob storage) and the
project's Batch emulator, each behind a counting proxy.

The emulator runs tasks on this host (docker off): the kit's own worker.py,
started with this Python, in each task's working directory. Nothing here
reaches Azure.
"""

from __future__ import annotations

import shlex
from contextlib import contextmanager
import sys
from dataclasses import dataclass

import pytest

from tests.support.proxy import Proxy, start_proxy
from tests.support.servers import AZURITE_ACCOUNT, kit_environment, start_azurite, start_batch_emulator


@pytest.fixture(scope="session")
def azurite():
    with start_azurite() as storage:  # fails, not skips, when Azurite is missing: `make test` installs it
        yield storage


@dataclass
class Cloud:
    emulator: object
    blobs: Proxy  # in front of Azurite
    batch: Proxy  # in front of the emulator
    azurite: object

    @property
    def env(self) -> dict:
        return kit_environment(self.emulator.account, self.emulator.key, self.batch.url, f"{self.blobs.url}/{AZURITE_ACCOUNT}")

    def flags(self, kit, run: str, *more) -> list:
        return ["--backend", "azure", "--run", run, "--poll-interval", "0.2",
                "--task-command", f"{shlex.quote(sys.executable)} {shlex.quote(str(kit.path / 'worker.py'))}", *more]

    def run(self, kit, run: str, *more, env=None, **kwargs):
        return kit.run(*self.flags(kit, run, *more), env={**self.env, **(env or {})}, **kwargs)

    def container(self, run: str):
        return self.azurite.blob_service().get_container_client(f"superbatch-{run.lower()}")

    def job_tasks(self, job_id: str) -> list:
        return list(self.emulator.client().list_tasks(job_id))


@contextmanager
def cloud_factory(azurite, may_fail=None):
    """A function that starts an emulator (with any of start_batch_emulator's
    options: faults, docker, ...) and the two proxies, each call a new set;
    everything started stops when the `with` ends. `may_fail` limits which
    blob requests a failure rate may fail."""
    started = []

    def make(*, blob_failure_rate: float = 0.0, seed: int = 0, **emulator_options) -> Cloud:
        # The kit's pools autoscale (elastic.py): a 5-minute evaluation interval lasts
        # 3 s here, so that a pool grows within a second of the tasks and drains soon after.
        emulator_options.setdefault("autoscale_interval", 3.0)
        emulator = start_batch_emulator(**emulator_options)
        blobs = start_proxy(f"http://{azurite.host}:{azurite.port}", failure_rate=blob_failure_rate, seed=seed, may_fail=may_fail)
        batch = start_proxy(emulator.endpoint)
        started.extend([batch, blobs, emulator])
        return Cloud(emulator, blobs, batch, azurite)

    try:
        yield make
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def make_cloud(azurite):
    with cloud_factory(azurite) as make:
        yield make


@pytest.fixture
def cloud(make_cloud):
    return make_cloud()
