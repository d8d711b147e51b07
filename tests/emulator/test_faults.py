"""Injected faults, survived by the SDK's own retries; preemption and recovery.

Sources: BatchService.json (the REST description, 2025-06-01) and Microsoft's
Batch documentation. What the emulator does without a source (the fault plan,
Retry-After on its 429) is listed in batch_emulator/README.md."""

import json
import urllib.request

import pytest
from azure.batch import BatchClient
from azure.batch import models as bm
from azure.core.exceptions import ResourceExistsError

from batch_emulator.faults import FaultPlan
from tests.support.proxy import start_proxy
from tests.support.servers import start_batch_emulator

from .conftest import pool_options, py, wait_for, wait_job_done, wait_pool_steady


def test_fault_plan_is_seeded_and_reproducible():
    def decisions():
        plan = FaultPlan.parse("transient=0.3,throttle=0.1,seed=7")
        return [plan.for_request() for _ in range(200)]
    first, second = decisions(), decisions()
    assert first == second
    assert {"throttle", "transient-before", "transient-after", None} == set(first)
    with pytest.raises(ValueError):
        FaultPlan.parse("transient=2")
    with pytest.raises(ValueError):
        FaultPlan.parse("meteor=0.1")


def test_transient_errors_and_throttling_are_survived(tmp_path):
    faults = "transient=0.15,throttle=0.05,seed=11,retry_after=0"
    with start_batch_emulator(faults=faults) as emu:
        proxy = start_proxy(emu.endpoint)  # counts what the client sent and got, apart from the emulator
        try:
            client = BatchClient(proxy.url, emu.credential())
            # A create answered 500 *after* it took effect comes back as "exists"
            # on the SDK's retry: a robust client treats that as done.
            def ensure(create):
                try:
                    create()
                except ResourceExistsError:
                    pass
            ensure(lambda: client.create_pool(pool_options("p", dedicated=1, slots=8)))
            ensure(lambda: client.create_job(bm.BatchJobCreateOptions(id="j", pool_info=bm.BatchPoolInfo(pool_id="p"))))
            result = client.create_tasks("j", [bm.BatchTaskCreateOptions(id=f"t{i}", command_line=py("pass"))
                                               for i in range(300)], max_concurrency=2)
            assert len(result.result_values) == 300
            wait_job_done(client, "j")
            tasks = list(client.list_tasks("j", select=["id", "state"], max_results=100))
            assert len(tasks) == 300 and {t.state for t in tasks} == {bm.BatchTaskState.COMPLETED}
            counts = client.get_job_task_counts("j").task_counts
            assert (counts.completed, counts.succeeded) == (300, 300)
            client.close()
            faults = emu.stats()["faults"]
            assert faults["transient-before"] > 0 and faults["transient-after"] > 0 and faults["throttle"] > 0
            # Every injected fault reached the client as an answer that was not 2xx.
            not_2xx = sum(proxy.arrivals.values()) - sum(proxy.done.values())
            assert not_2xx >= faults["transient-before"] + faults["transient-after"] + faults["throttle"]
        finally:
            proxy.stop()


def test_throttle_answer_carries_retry_after():
    with start_batch_emulator(faults="throttle=1.0,retry_after=3") as emu:
        # A raw request: the SDK would politely wait and retry.
        req = urllib.request.Request(f"{emu.endpoint}/jobs?api-version=2025-06-01")
        from batch_emulator.responses import sign, string_to_sign
        req.add_header("ocp-date", "Tue, 24 Nov 2026 10:00:00 GMT")
        text = string_to_sign("GET", "/jobs", "api-version=2025-06-01", dict(req.header_items()), emu.account)
        req.add_header("Authorization", f"SharedKey {emu.account}:{sign(emu.key, text)}")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req)
        assert info.value.code == 429 and info.value.headers["Retry-After"] == "3"
        body = json.loads(info.value.read())
        assert body["code"] == "TooManyRequests" and body["message"]["lang"] == "en-US"


def logging_task(task_id: str, log) -> bm.BatchTaskCreateOptions:
    """A task that appends its id to a file each time it runs: runs counted outside the emulator."""
    return bm.BatchTaskCreateOptions(id=task_id, command_line=py(f"open({str(log)!r}, 'a').write({task_id!r} + '\\n')"))


def test_preemption_runs_tasks_again_on_low_priority_nodes(tmp_path):
    log = tmp_path / "runs.log"
    with start_batch_emulator(faults="preempt=0.4,seed=5,preempt_after=0.2", preempt_recovery=0.1) as emu, \
            emu.client() as client:
        client.create_pool(pool_options("spot", dedicated=0, low=2, slots=2))
        wait_pool_steady(client, "spot")
        client.create_job(bm.BatchJobCreateOptions(id="j", pool_info=bm.BatchPoolInfo(pool_id="spot")))
        client.create_tasks("j", [logging_task(f"t{i}", log) for i in range(20)])
        def finished():
            counts = client.get_job_task_counts("j").task_counts
            return counts.completed == 20
        wait_for(finished, timeout=60, what="all tasks despite preemption")
        tasks = list(client.list_tasks("j"))
        runs = log.read_text().split()
        assert set(runs) == {f"t{i}" for i in range(20)}
        assert len(runs) > 20, "with preempt=0.4 some task must have run again"
        # A preempted node is a recovery, not a user's request: the REST description
        # counts neither in retryCount ("retries due to recovery operations are ... not
        # counted against the maxTaskRetryCount") nor in requeueCount (requeues "as the
        # result of a user request": a pool shrunk, a job disabled).
        assert all(t.execution_info.result == "success" for t in tasks)
        assert all(t.execution_info.retry_count == 0 and t.execution_info.requeue_count == 0 for t in tasks)
        # Preempted nodes come back.
        wait_for(lambda: {n.state for n in client.list_nodes("spot")} == {bm.BatchNodeState.IDLE},
                 what="nodes back")


def test_dedicated_nodes_are_never_preempted(tmp_path):
    # Microsoft's "Use Spot VMs with Batch": only Spot (low-priority) nodes are preempted.
    log = tmp_path / "runs.log"
    with start_batch_emulator(faults="preempt=1.0,seed=1") as emu, emu.client() as client:
        client.create_pool(pool_options("ded", dedicated=1, slots=2))
        client.create_job(bm.BatchJobCreateOptions(id="j", pool_info=bm.BatchPoolInfo(pool_id="ded")))
        client.create_tasks("j", [logging_task(f"t{i}", log) for i in range(4)])
        wait_job_done(client, "j")
        assert sorted(log.read_text().split()) == [f"t{i}" for i in range(4)]  # each ran once
