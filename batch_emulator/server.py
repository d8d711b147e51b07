"""Starting the emulator: in this process (for tests) or as a program.

    from batch_emulator.server import start_emulator

    with start_emulator(node_startup_delay=0.05, docker="off") as emu:
        client = emu.client()          # an azure.batch.BatchClient
        ...
        emu.stats()                    # the counters of /_emulator/stats

The server listens on a free port of 127.0.0.1 unless told otherwise and runs
uvicorn in a background thread; ``stop()`` (or leaving the ``with``) shuts it
down and ends the task processes it started.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import uvicorn

from .execution import Runner
from .faults import FaultPlan
from .models import BatchBackend, default_workdir
from .state.account import Quotas, parse_allocation
from .responses import BatchResponses
from .urls import build_app

DEFAULT_ACCOUNT = "emulator"
# Seconds a deleted pool or job stays `deleting` and a terminated job
# `terminating`. The service takes minutes; 0 keeps the emulator's old
# instant answers (see README, "Adversity").
DEFAULT_DELETE_DELAY = 0.0


def new_key() -> str:
    return base64.b64encode(os.urandom(64)).decode()


def build(account: str, key: str, *, docker: str = "auto", faults: str | FaultPlan | None = None,
          node_startup_delay: float = 0.05, workdir: str | Path | None = None,
          preempt_recovery: float | None = None, quota: str | dict | None = None,
          allocation: str = "ok", delete_delay: float = DEFAULT_DELETE_DELAY,
          counts_lag: float = 0.0, state_file: str | Path | None = None,
          autoscale_interval: float | None = None, task_overhead: float = 0.0):
    """The ASGI app and its backend, not yet listening. With ``state_file`` the
    account is loaded from it and kept in it (persistence.py); the backend's
    ``state_keeper`` then needs stop() after the backend's close()."""
    plan = faults if isinstance(faults, FaultPlan) else FaultPlan.parse(faults)
    quota, allocation = Quotas.parse(quota), parse_allocation(allocation)   # refuse before any temp dir
    if delete_delay < 0 or counts_lag < 0:
        raise ValueError("delete_delay and counts_lag are seconds, not negative")
    if autoscale_interval is not None and not autoscale_interval > 0:
        raise ValueError("autoscale_interval is seconds, more than 0")
    if task_overhead < 0:
        raise ValueError("task_overhead is seconds, not negative")
    runner = Runner(docker)
    runner.task_overhead = task_overhead
    backend = BatchBackend(account, Path(workdir) if workdir else default_workdir(), runner,
                           faults=plan, node_startup_delay=node_startup_delay,
                           preempt_recovery=preempt_recovery, quota=quota, allocation=allocation,
                           delete_delay=delete_delay, counts_lag=counts_lag,
                           autoscale_interval=autoscale_interval)
    app = build_app(BatchResponses(backend, account, key))
    backend.state_keeper = None
    if state_file is not None:
        from .persistence import StateKeeper

        try:
            backend.state_keeper = StateKeeper(backend, state_file)
        except BaseException:
            backend.close()
            raise
        app = backend.state_keeper.wrap(app)
    return app, backend


def stop_backend(backend) -> None:
    """End the task runs, then write the state file one last time (if kept)."""
    backend.close()
    if getattr(backend, "state_keeper", None) is not None:
        backend.state_keeper.stop()


class EmulatorHandle:
    """A running emulator: where it listens, its credentials, its counters."""

    def __init__(self, endpoint, account, key, backend, server, thread, owns_workdir):
        self.endpoint, self.account, self.key = endpoint, account, key
        self.backend = backend
        self._server, self._thread, self._owns_workdir = server, thread, owns_workdir

    @property
    def workdir(self) -> Path:
        return self.backend.workdir

    @property
    def docker_available(self) -> bool:
        return self.backend.runner.docker is not None

    def credential(self):
        from azure.core.credentials import AzureNamedKeyCredential

        return AzureNamedKeyCredential(self.account, self.key)

    def client(self, **kwargs):
        """A real ``azure.batch.BatchClient`` pointed at this emulator."""
        from azure.batch import BatchClient

        return BatchClient(self.endpoint, self.credential(), **kwargs)

    def stats(self) -> dict:
        return self.backend.stats.snapshot()

    def reset_stats(self) -> None:
        self.backend.stats.reset()

    def stop(self) -> None:
        if self._thread is None:
            return
        self.backend.stop_runs()   # as the program does at its signal (__main__._Server)
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._thread = None
        stop_backend(self.backend)
        if self._owns_workdir:
            shutil.rmtree(self.backend.workdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()


def start_emulator(*, account: str = DEFAULT_ACCOUNT, key: str | None = None, host: str = "127.0.0.1",
                   port: int = 0, docker: str = "auto", faults: str | FaultPlan | None = None,
                   node_startup_delay: float = 0.05, workdir: str | Path | None = None,
                   preempt_recovery: float | None = None, quota: str | dict | None = None,
                   allocation: str = "ok", delete_delay: float = DEFAULT_DELETE_DELAY,
                   counts_lag: float = 0.0, state_file: str | Path | None = None,
                   autoscale_interval: float | None = None, task_overhead: float = 0.0,
                   timeout: float = 10.0) -> EmulatorHandle:
    """Start the emulator in a background thread and wait until it answers.

    ``quota`` ("dedicated-cores=N,spot-cores=N,pools=N,active-jobs=N", any
    subset, or a dict of the same) and ``allocation`` ("ok", "fail",
    "timeout") make the account as hard to please as a real one;
    ``delete_delay`` (seconds in deleting/terminating) and ``counts_lag``
    (seconds task counts may be old) make it as slow; see the README's
    "Adversity". ``state_file`` keeps the account's pools, jobs and tasks in
    that JSON file across restarts (README, "Persistence"). ``autoscale_interval``
    is how many real seconds the service's shortest autoscale interval (5
    minutes) lasts; every autoscale time scales with it (README, "Autoscale").
    ``task_overhead`` adds that many seconds to each task run on the host, a
    model of the service's fixed cost per task (README, "Task overhead").
    """
    key = key or new_key()
    app, backend = build(account, key, docker=docker, faults=faults, node_startup_delay=node_startup_delay,
                         workdir=workdir, preempt_recovery=preempt_recovery, quota=quota,
                         allocation=allocation, delete_delay=delete_delay, counts_lag=counts_lag,
                         state_file=state_file, autoscale_interval=autoscale_interval,
                         task_overhead=task_overhead)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    endpoint = f"http://{host}:{sock.getsockname()[1]}"
    backend.base_url = endpoint
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name="batch-emulator-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            stop_backend(backend)
            raise RuntimeError("the Batch emulator did not start")
        time.sleep(0.01)
    logging.getLogger("batch_emulator").debug("Batch emulator listening on %s", endpoint)
    return EmulatorHandle(endpoint, account, key, backend, server, thread, owns_workdir=workdir is None)
