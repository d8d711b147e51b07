"""SAS lifetimes on a resumed run: tasks that waited past the expiry of their
SAS URLs get fresh ones, and the run succeeds (Azurite refuses an expired
SAS, so without the renewal the tasks' downloads fail)."""

import json
import os
import signal
import subprocess
import time
from datetime import datetime, timezone

from azure.batch import models as bm

from tests.emulator.conftest import pool_options
from tests.kit import last_line, plain_loop
from tests.test_local import MIXED_TASK

SAS_HOURS = "0.01"  # 36 s


def wait_for_journal(kit, run, check, timeout=120, strict=True):
    deadline = time.monotonic() + timeout
    path = kit.run_dir(run) / "run.json"
    while time.monotonic() < deadline:
        if path.exists():
            try:
                state = json.loads(path.read_text()).get("backends", {}).get("azure", {})
            except ValueError:
                state = {}
            if check(state):
                return state
        time.sleep(0.2)
    if not strict:
        return None
    raise AssertionError(f"the journal never showed it: {path.read_text() if path.exists() else 'no journal'}")


def test_resumed_tasks_past_their_sas_expiry_get_fresh_urls(kit, cloud):
    kit.write_task(MIXED_TASK)
    client = cloud.emulator.client()
    client.create_pool(pool_options("superbatch", dedicated=0, slots=4))  # tasks wait: no node yet
    first = subprocess.Popen(kit.command(*cloud.flags(kit, "sas", "--sas-hours", SAS_HOURS)), cwd=kit.path,
                             env={**os.environ, **cloud.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        state = wait_for_journal(kit, "sas", lambda s: s.get("added") == [[0, 15]] and s.get("sas_expires"))
    finally:
        first.send_signal(signal.SIGKILL)  # the controller dies; its tasks keep waiting in the job
        first.communicate()
    expires = datetime.fromisoformat(state["sas_expires"])
    time.sleep(max(0.0, (expires - datetime.now(timezone.utc)).total_seconds()) + 3)
    assert all(task.state == "active" for task in cloud.job_tasks("superbatch-sas"))

    # The rerun, then nodes: the tasks must still be waiting when it reattaches.
    rerun = subprocess.Popen(kit.command(*cloud.flags(kit, "sas", "--sas-hours", SAS_HOURS)), cwd=kit.path,
                             env={**os.environ, **cloud.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_journal(kit, "sas", lambda s: s.get("sas_expires") != state["sas_expires"] or rerun.poll() is not None, timeout=30,
                         strict=False)  # without a renewal the nodes come anyway, and the tasks meet their expired SAS
        client.begin_resize_pool("superbatch", bm.BatchPoolResizeOptions(target_dedicated_nodes=1))
        stdout, stderr = rerun.communicate(timeout=300)
    finally:
        rerun.kill()
    assert rerun.returncode == 0, stderr
    assert "16 waiting tasks get fresh SAS URLs (theirs expire soon)" in stderr
    assert last_line(stdout) == plain_loop(kit.path)
    tasks = {task.id: task for task in cloud.job_tasks("superbatch-sas")}
    assert "sas-0" not in tasks and tasks["sas-0-r1"].execution_info.result == "success"
