"""Account quotas and node allocation outcomes (``quota=``, ``allocation=``)
through the real azure-batch SDK: the codes and states the service documents.
"""

from __future__ import annotations

import datetime
import io
import time
from contextlib import redirect_stderr

import pytest
from azure.batch import models as bm
from azure.batch.models._models import BatchJobTerminateOptions   # not exported by azure-batch 15.1
from azure.core.exceptions import ResourceExistsError

from batch_emulator.__main__ import main as emulator_main
from batch_emulator.state.account import Quotas, cores_of
from tests.support.servers import start_batch_emulator

from .conftest import make_job, pool_options, unique, wait_pool_steady


def _emulator(**options):
    return start_batch_emulator(node_startup_delay=0.05, docker="off", **options)


def _codes(pool) -> list[str]:
    return [e.code for e in pool.resize_errors or []]


def test_pool_quota_refuses_the_next_pool_until_one_is_deleted():
    with _emulator(quota="pools=1") as emu:
        client = emu.client()
        first = unique("pool")
        client.create_pool(pool_options(first, dedicated=0))
        with pytest.raises(ResourceExistsError) as info:
            client.create_pool(pool_options(unique("pool"), dedicated=0))
        assert info.value.status_code == 409 and info.value.error.code == "PoolQuotaReached"
        client.begin_delete_pool(first, polling_interval=0.05).result()
        client.create_pool(pool_options(unique("pool"), dedicated=0))


def test_active_job_quota_counts_jobs_until_they_complete():
    with _emulator(quota={"active_jobs": 1}) as emu:
        client = emu.client()
        pool_id = unique("pool")
        client.create_pool(pool_options(pool_id, dedicated=0))
        first = make_job(client, pool_id)
        with pytest.raises(ResourceExistsError) as info:
            make_job(client, pool_id)
        assert info.value.status_code == 409
        assert info.value.error.code == "ActiveJobAndScheduleQuotaReached"
        client.begin_terminate_job(first, BatchJobTerminateOptions(termination_reason="done"),
                                   polling_interval=0.05).result()
        assert client.get_job(first).state == bm.BatchJobState.COMPLETED
        make_job(client, pool_id)                  # completed jobs have no limit


def test_dedicated_core_quota_leaves_the_pool_steady_short_of_its_target():
    assert cores_of("standard_d2s_v3") == 2
    with _emulator(quota="dedicated-cores=4") as emu:
        client = emu.client()
        big, small = unique("pool"), unique("pool")
        client.create_pool(pool_options(big, dedicated=3))          # 6 cores asked, 4 allowed
        pool = wait_pool_steady(client, big)
        assert (pool.current_dedicated_nodes, pool.target_dedicated_nodes) == (2, 3)
        assert _codes(pool) == ["AccountCoreQuotaReached"]
        message = pool.resize_errors[0].message
        assert message.startswith("The specified account has reached core quota")
        assert "6 cores" in message and "account's 4" in message

        client.create_pool(pool_options(small, dedicated=1))        # the account is full
        pool = wait_pool_steady(client, small)
        assert pool.current_dedicated_nodes == 0 and _codes(pool) == ["AccountCoreQuotaReached"]

        # A resize obeys the same rule; freeing cores lets the next resize through.
        client.begin_resize_pool(big, bm.BatchPoolResizeOptions(target_dedicated_nodes=1),
                                 polling_interval=0.05).result()
        pool = wait_pool_steady(client, big)
        assert pool.current_dedicated_nodes == 1 and not pool.resize_errors
        client.begin_resize_pool(small, bm.BatchPoolResizeOptions(target_dedicated_nodes=2),
                                 polling_interval=0.05).result()
        pool = wait_pool_steady(client, small)
        assert pool.current_dedicated_nodes == 1 and _codes(pool) == ["AccountCoreQuotaReached"]


def test_spot_core_quota_zero_gives_no_low_priority_nodes():
    with _emulator(quota="spot-cores=0") as emu:
        client = emu.client()
        pool_id = unique("pool")
        client.create_pool(pool_options(pool_id, dedicated=1, low=2))
        pool = wait_pool_steady(client, pool_id)
        assert (pool.current_dedicated_nodes, pool.current_low_priority_nodes) == (1, 0)
        assert _codes(pool) == ["AccountLowPriorityCoreQuotaReached"]
        assert "low priority core quota" in pool.resize_errors[0].message


def test_allocation_fail_gives_no_nodes_and_tasks_wait():
    with _emulator(allocation="fail") as emu:
        client = emu.client()
        pool_id = unique("pool")
        client.create_pool(pool_options(pool_id, dedicated=2))
        pool = wait_pool_steady(client, pool_id)
        assert pool.current_dedicated_nodes == 0 and _codes(pool) == ["AllocationFailed"]
        job_id = make_job(client, pool_id)
        client.create_task(job_id, bm.BatchTaskCreateOptions(id="t", command_line="true"))
        time.sleep(0.3)
        assert client.get_task(job_id, "t").state == bm.BatchTaskState.ACTIVE


def test_allocation_timeout_keeps_the_pool_resizing_until_resize_timeout():
    with _emulator(allocation="timeout") as emu:
        client = emu.client()
        pool_id = unique("pool")
        started = time.monotonic()
        # The service's minimum resizeTimeout is 5 minutes; the emulator takes
        # shorter ones so the test does not wait that long (README "Adversity").
        client.create_pool(pool_options(pool_id, dedicated=1, low=1,
                                        resize_timeout=datetime.timedelta(seconds=1.5)))
        pool = client.get_pool(pool_id)
        assert pool.allocation_state == bm.AllocationState.RESIZING and not pool.resize_errors
        with pytest.raises(ResourceExistsError):                   # no resize while resizing
            client.begin_resize_pool(pool_id, bm.BatchPoolResizeOptions(target_dedicated_nodes=2))
        pool = wait_pool_steady(client, pool_id, timeout=10)
        assert time.monotonic() - started >= 1.4
        assert (pool.current_dedicated_nodes, pool.current_low_priority_nodes) == (0, 0)
        assert _codes(pool) == ["AllocationTimedout", "AllocationTimedout"]
        assert pool.resize_errors[0].message == (
            "Desired number of dedicated nodes could not be allocated as the resize timeout was reached")


def test_no_options_change_nothing():
    with _emulator() as emu:
        client = emu.client()
        pool_id = unique("pool")
        client.create_pool(pool_options(pool_id, dedicated=3, low=2))
        pool = wait_pool_steady(client, pool_id)
        assert (pool.current_dedicated_nodes, pool.current_low_priority_nodes) == (3, 2)
        assert not pool.resize_errors


def test_option_errors_are_one_clear_line():
    assert Quotas.parse("dedicated-cores=8,spot_cores=0") == Quotas(dedicated_cores=8, spot_cores=0)
    for argv, expected in ((["--quota", "pools=x"], "pools must be a whole number"),
                           (["--quota", "cores=1"], "unknown key 'cores'"),
                           (["--quota", "pools"], "is not KEY=N")):
        err = io.StringIO()
        with redirect_stderr(err):
            assert emulator_main(argv + ["--port", "0"]) == 2
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], lines
    with pytest.raises(ValueError, match="--allocation"):
        start_batch_emulator(docker="off", allocation="sometimes")
