"""state_file= (--state-file): the account outlives the emulator.

Sources: the kit's --emulate needs a resumed rehearsal to find its account as
it was (issue 14); a node reboot with the default nodeRebootOption, `requeue`,
ends the running task processes and puts their tasks back in the queue (the
REST description's ComputeNodeRebootOption): what a restart is to the tasks
that were running.
"""

import json

from azure.batch import models as bm

from tests.emulator.conftest import pool_options, py, wait_for
from tests.support.servers import start_batch_emulator


def test_pools_jobs_and_tasks_come_back_and_running_tasks_are_requeued(tmp_path):
    state, workdir = tmp_path / "batch-state.json", tmp_path / "batch"
    with start_batch_emulator(state_file=state, workdir=workdir) as emu:
        key = emu.key
        client = emu.client()
        client.create_pool(pool_options("p", dedicated=1, slots=1, display_name="kept"))
        client.create_job(bm.BatchJobCreateOptions(id="j", pool_info=bm.BatchPoolInfo(pool_id="p")))
        client.create_task("j", bm.BatchTaskCreateOptions(id="quick", command_line=py("raise SystemExit(3)")))
        client.create_task("j", bm.BatchTaskCreateOptions(id="slow", command_line=py("import time; time.sleep(60)")))
        wait_for(lambda: client.get_task("j", "slow").state == "running", what="slow running")
        quick = client.get_task("j", "quick")
        # Written by the watcher within a quarter of a second of the change.
        wait_for(lambda: [t["state"] for t in json.loads(state.read_text())["jobs"][0]["tasks"]] == ["completed", "running"],
                 timeout=5, what="the state file has the change")

    with start_batch_emulator(state_file=state, workdir=workdir, key=key) as emu:
        client = emu.client()
        pool = client.get_pool("p")
        assert (pool.display_name, pool.target_dedicated_nodes) == ("kept", 1)
        assert client.get_job("j").state == "active"
        again = client.get_task("j", "quick")
        assert again.state == "completed"
        assert again.execution_info.exit_code == 3 and again.execution_info.result == "failure"
        assert again.creation_time == quick.creation_time
        slow = client.get_task("j", "slow")
        assert slow.state in ("active", "preparing", "running")
        assert slow.execution_info.requeue_count == 1
        counts = client.get_job_task_counts("j").task_counts   # rebuilt from the tasks
        assert (counts.completed, counts.failed, counts.active + counts.running) == (1, 1, 1)
        client.create_task("j", bm.BatchTaskCreateOptions(id="after", command_line=py("pass")))
        wait_for(lambda: client.get_task("j", "slow").state == "running", what="slow running again")
        client.terminate_task("j", "slow")
        wait_for(lambda: client.get_task("j", "after").state == "completed", what="a new task runs")


def test_a_run_that_ends_once_the_parent_is_gone_is_not_recorded(tmp_path):
    """--emulate ties the emulator and Azurite to the controller: a controller
    killed takes both at once, and a run ending then (its upload refused by the
    vanished storage) must not be saved as completed: it is requeued on restart."""
    import os
    import signal

    state, workdir = tmp_path / "batch-state.json", tmp_path / "batch"
    with start_batch_emulator(state_file=state, workdir=workdir) as emu:
        key = emu.key
        client = emu.client()
        client.create_pool(pool_options("p", dedicated=1, slots=1))
        client.create_job(bm.BatchJobCreateOptions(id="j", pool_info=bm.BatchPoolInfo(pool_id="p")))
        client.create_task("j", bm.BatchTaskCreateOptions(id="cut", command_line=py("import time; time.sleep(60)")))
        client.create_task("j", bm.BatchTaskCreateOptions(id="queued", command_line=py("pass")))
        wait_for(lambda: client.get_task("j", "cut").state == "running", what="cut running")
        task = emu.backend.jobs["j"].tasks["cut"]
        wait_for(lambda: task.handle is not None and task.handle.proc is not None, what="its process")
        node = task.node
        emu.backend.parent_gone = lambda: True
        os.killpg(task.handle.proc.pid, signal.SIGKILL)   # the run ends on its own (exit -9)
        wait_for(lambda: not node.runs, what="the run's end handled")
        assert client.get_task("j", "cut").state == "running"
        assert client.get_task("j", "queued").state == "active"   # nothing more starts
    saved = {t["id"]: t["state"] for t in json.loads(state.read_text())["jobs"][0]["tasks"]}
    assert saved == {"cut": "running", "queued": "active"}

    with start_batch_emulator(state_file=state, workdir=workdir, key=key) as emu:
        cut = emu.client().get_task("j", "cut")
        assert cut.state in ("active", "preparing", "running") and cut.execution_info.requeue_count == 1
