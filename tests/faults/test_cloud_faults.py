"""A misbehaving cloud: Batch answering 500/503 and 429, blob storage failing
requests, spot nodes preempted. The run still ends with the fault-free
aggregate, and no task is created or run twice where that is not the cloud's doing."""

import collections
import json
import time

from tests.faults.conftest import LOGGING_TASK, TASK_COMMAND
from tests.kit import last_line, plain_loop

COUNT = 200

EXPECTED = str(sum(i * 3 for i in range(COUNT)))  # what the plain loop of LOGGING_TASK prints


def runs_per_task(log) -> collections.Counter:
    return collections.Counter(map(int, log.read_text().split()))


def test_batch_5xx_429_and_blob_failures_change_nothing(kit, make_cloud, tmp_path):
    cloud = make_cloud(faults="transient=0.1,throttle=0.05,seed=7", blob_failure_rate=0.05, seed=11)
    log = tmp_path / "ran.log"
    kit.write_task(LOGGING_TASK.format(log=str(log), count=COUNT, sleep=0))
    assert plain_loop(kit.path) == EXPECTED
    log.unlink()  # the plain loop logged its runs too

    started = time.monotonic()
    done = cloud.run(kit, "faulty", "--dedicated-nodes", "4", "--task-slots", "4", "--task-command", TASK_COMMAND,
                     "--summary-json", tmp_path / "summary.json")
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == EXPECTED

    # Each task ran exactly once, and the job holds exactly COUNT tasks, each done once.
    assert runs_per_task(log) == collections.Counter(range(COUNT))
    tasks = cloud.job_tasks("superbatch-faulty")
    assert sorted(task.id for task in tasks) == sorted(f"faulty-{i}" for i in range(COUNT))
    assert all(task.execution_info.result == "success" and task.execution_info.retry_count == 0 for task in tasks)
    # Every input went up and every output came home, once each.
    assert all(n == 1 for n in cloud.blobs.by_path("PUT", "_resource.pickle").values())
    assert len(cloud.blobs.by_path("PUT", "_resource.pickle")) == COUNT
    assert all(n == 1 for n in cloud.blobs.by_path("GET", "_output.pickle").values())
    assert len(cloud.blobs.by_path("GET", "_output.pickle")) == COUNT

    # The faults did happen, of every kind.
    faults = cloud.emulator.stats()["faults"]
    assert faults.get("transient-before", 0) >= 3 and faults.get("transient-after", 0) >= 3, faults
    assert faults.get("throttle", 0) >= 2, faults
    # ... and reached the kit: the proxy saw that many answers that were not 2xx, some to task collections.
    assert sum(cloud.batch.arrivals.values()) - sum(cloud.batch.done.values()) >= sum(faults.values()), faults
    assert sum(cloud.batch.arrived("POST", "/addtaskcollection").values()) > cloud.batch.count("POST", "/addtaskcollection")
    assert cloud.blobs.failed >= 10, cloud.blobs.failed
    phases = json.loads((tmp_path / "summary.json").read_text())["phases"]
    print(f"faulty run: {time.monotonic() - started:.1f} s {phases}, emulator faults {faults}, blob requests failed {cloud.blobs.failed}")


def test_preempted_spot_nodes_lose_no_task(kit, make_cloud, tmp_path):
    cloud = make_cloud(faults="preempt=0.3,preempt_after=0.3,seed=5", preempt_recovery=0.3)
    log = tmp_path / "ran.log"
    kit.write_task(LOGGING_TASK.format(log=str(log), count=COUNT, sleep=0))

    done = cloud.run(kit, "spot", "--spot-nodes", "4", "--dedicated-nodes", "0", "--task-slots", "4", "--task-command", TASK_COMMAND)
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == EXPECTED

    stats = cloud.emulator.stats()
    assert stats["faults"].get("preempt", 0) >= 0.2 * COUNT, stats["faults"]
    # Every task completed, once, in a job of exactly COUNT tasks; the preempted ones ran again
    # (the side-effect log, not the emulator's counters, says how often each ran).
    tasks = cloud.job_tasks("superbatch-spot")
    assert len(tasks) == COUNT and {task.id for task in tasks} == {f"spot-{i}" for i in range(COUNT)}
    assert all(task.state == "completed" and task.execution_info.result == "success" for task in tasks)
    assert set(runs_per_task(log)) == set(range(COUNT))
    assert COUNT < sum(runs_per_task(log).values()) <= COUNT + stats["faults"]["preempt"]
    # Outputs of a run cut short are not uploaded: each output came home once.
    assert all(n == 1 for n in cloud.blobs.by_path("GET", "_output.pickle").values())
    assert len(cloud.blobs.by_path("GET", "_output.pickle")) == COUNT
