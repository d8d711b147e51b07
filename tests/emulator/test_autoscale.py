"""Autoscale on the emulator, through the real azure-batch SDK.

The emulators here run with ``autoscale_interval``: a "5 minute" interval
lasts that many real seconds and every autoscale time (sample period, the
30 s between enables) scales with it (README, "Autoscale").
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
from azure.batch import models as bm
from azure.core.exceptions import HttpResponseError

from batch_emulator.__main__ import main as emulator_main
from tests.emulator.autoscale_formulas import FORMULAS, SOURCE, example_4
from tests.emulator.conftest import make_job, pool_options, py, unique, wait_for, wait_job_done
from tests.support.servers import start_batch_emulator

FAST = 1.0    # a 5-minute interval lasts 1 s; a 30 s sample period 0.1 s
SLOW = 30.0   # a 5-minute interval lasts 30 s; the 30 s between enables 3 s


@pytest.fixture(scope="module")
def fast():
    with start_batch_emulator(autoscale_interval=FAST) as emu:
        yield emu.client()


@pytest.fixture(scope="module")
def slow():
    with start_batch_emulator(autoscale_interval=SLOW) as emu:
        yield emu.client()


def enable(client, pool_id, formula=None, interval=None):
    client.enable_pool_auto_scale(pool_id, bm.BatchPoolEnableAutoScaleOptions(
        auto_scale_formula=formula, auto_scale_evaluation_interval=interval))


def evaluate(client, pool_id, formula) -> bm.AutoScaleRun:
    return client.evaluate_pool_auto_scale(pool_id, bm.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula=formula))


def autoscale_pool(client, formula, interval=dt.timedelta(minutes=5), slots=1) -> str:
    pool_id = unique("as")
    client.create_pool(pool_options(pool_id, dedicated=None, low=None, slots=slots, enable_auto_scale=True,
                                    auto_scale_formula=formula, auto_scale_evaluation_interval=interval))
    return pool_id


def error_of(call) -> tuple[int, str]:
    with pytest.raises(HttpResponseError) as info:
        call()
    return info.value.status_code, info.value.error.code


def test_enable_evaluate_disable_as_recorded(fast):
    # The calls and answers of the recorded python azure-batch session test_batch_scale_pools.
    pool_id = unique("rec")
    fast.create_pool(pool_options(pool_id, dedicated=0))
    enable(fast, pool_id, "$TargetDedicatedNodes=2", "PT06M00S")
    run = evaluate(fast, pool_id, "$TargetDedicatedNodes=3")
    assert run.results == "$TargetDedicatedNodes=3;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue"
    assert run.error is None and run.timestamp is not None
    pool = wait_for(lambda: (p := fast.get_pool(pool_id)).auto_scale_run and p, 5, what="the first evaluation")
    assert pool.enable_auto_scale is True
    assert pool.auto_scale_formula == "$TargetDedicatedNodes=2"
    assert pool.auto_scale_evaluation_interval == dt.timedelta(minutes=6)
    assert pool.auto_scale_run.results.startswith("$TargetDedicatedNodes=2;")
    assert pool.target_dedicated_nodes == 2   # applied; the evaluated "3" was not
    wait_for(lambda: fast.get_pool(pool_id).current_dedicated_nodes == 2, 5, what="two nodes")
    fast.disable_pool_auto_scale(pool_id)
    pool = fast.get_pool(pool_id)
    assert pool.enable_auto_scale is False
    assert pool.auto_scale_formula is None and pool.auto_scale_run is None
    assert pool.target_dedicated_nodes == 2   # disabling leaves the pool as it is
    fast.begin_resize_pool(pool_id, bm.BatchPoolResizeOptions(target_dedicated_nodes=0)).result()


def test_what_the_service_refuses(slow):
    fixed = unique("fixed")
    slow.create_pool(pool_options(fixed, dedicated=0))
    # Evaluate needs autoscale on; so does nothing else, but resize needs it off.
    assert error_of(lambda: evaluate(slow, fixed, "$TargetDedicatedNodes=1")) == (
        409, "OperationInvalidForCurrentState")
    assert error_of(lambda: enable(slow, fixed, "$TargetDedicatedNodes=(1")) == (400, "AutoScalingFormulaSyntaxError")
    assert error_of(lambda: enable(slow, fixed, "a=1;" * 2100)) == (400, "AutoScaleFormulaTooLong")
    assert error_of(lambda: enable(slow, fixed, "$TargetDedicatedNodes=1", dt.timedelta(minutes=1))) == (
        400, "InvalidPropertyValue")
    assert error_of(lambda: enable(slow, fixed)) == (400, "MissingRequiredProperty")
    enable(slow, fixed, "$TargetDedicatedNodes=0")
    # The same pool takes one enable every 30 (scaled: 3) seconds; creation does not count.
    assert error_of(lambda: enable(slow, fixed, "$TargetDedicatedNodes=1")) == (409, "TooManyEnableAutoScaleRequests")
    assert error_of(lambda: slow.begin_resize_pool(fixed, bm.BatchPoolResizeOptions(target_dedicated_nodes=1))) == (
        409, "OperationInvalidForCurrentState")
    assert error_of(lambda: evaluate(slow, fixed, "$TargetDedicatedNodes=")) == (400, "AutoScalingFormulaSyntaxError")
    time.sleep(SLOW / 10 + 0.2)
    enable(slow, fixed, "$TargetDedicatedNodes=1")
    assert slow.get_pool(fixed).auto_scale_formula == "$TargetDedicatedNodes=1"
    # A pool created with autoscale takes no fixed targets (REST description).
    bad = pool_options(unique("bad"), dedicated=1, low=None, enable_auto_scale=True,
                       auto_scale_formula="$TargetDedicatedNodes=1")
    assert error_of(lambda: slow.create_pool(bad)) == (400, "InvalidPropertyValue")
    assert error_of(lambda: autoscale_pool(slow, "$TargetDedicatedNodes = max(")) == (
        400, "AutoScalingFormulaSyntaxError")


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_the_articles_sample_formulas_evaluate(fast, name):
    formula = FORMULAS[name] or example_4()
    pool_id = autoscale_pool(fast, "$TargetDedicatedNodes = 0;")
    time.sleep(0.5)   # a few samples (0.1 s apart here)
    run = evaluate(fast, pool_id, formula)
    assert run.error is None, f"{name} ({SOURCE}): {run.error and run.error.error_values}"
    assert run.results.startswith("$TargetDedicatedNodes="), run.results
    fast.begin_delete_pool(pool_id).result()


def test_results_show_every_variable(fast):
    pool_id = autoscale_pool(fast, "$TargetDedicatedNodes = 0;")
    run = evaluate(fast, pool_id, "b = 2; $a = max(1, b) * 1.5; $TargetLowPriority = 3; t = TimeInterval_Minute * 5;"
                                  "v = [1, 2] + 1; $NodeDeallocationOption = taskcompletion")
    assert run.results == ("$TargetDedicatedNodes=0;$TargetLowPriorityNodes=3;$NodeDeallocationOption=taskcompletion;"
                           "$a=3;b=2;t=00:05:00;v=[2,3]")
    fast.begin_delete_pool(pool_id).result()


def test_errors_are_reported_in_the_autoscale_run(fast):
    # Wanting 95% of ten minutes of samples from a pool just made: the service's
    # own example of a failed evaluation (REST reference, InsufficientSampleData).
    formula = "$TargetDedicatedNodes = 2 + avg($CPUPercent.GetSample(TimeInterval_Minute * 10, 95));"
    pool_id = autoscale_pool(fast, formula)
    run = wait_for(lambda: fast.get_pool(pool_id).auto_scale_run, 5, what="the first evaluation")
    assert run.error.code == "InsufficientSampleData"
    assert run.error.message == "Autoscale evaluation failed due to insufficient sample data"
    assert run.error.error_values[0].name == "Message"
    assert run.error.error_values[0].value.startswith(
        f"Line 1, Col {formula.index('$CPUPercent') + 1}: Insufficient data from data set: $CPUPercent wanted 95%, "
        "received ")
    assert fast.get_pool(pool_id).target_dedicated_nodes == 0   # a failed evaluation changes nothing
    run = evaluate(fast, pool_id, "x = 1;\n$TargetDedicatedNodes = nothing * 2;")
    assert run.error.code == "AutoScalingFormulaEvaluationError"
    assert run.error.error_values[0].value == "Line 2, Col 25: Undefined variable nothing"
    assert run.results.startswith("$TargetDedicatedNodes=0;")
    fast.begin_delete_pool(pool_id).result()


# The kit's kind of formula: as many nodes as tasks waiting or running, none when idle.
BY_PENDING_TASKS = """
    $tasks = max(0, $PendingTasks.GetSample(1));
    $TargetDedicatedNodes = min(3, ceil($tasks / $TaskSlotsPerNode));
    $NodeDeallocationOption = taskcompletion;
"""


def test_a_pool_sized_by_pending_tasks_grows_then_drains_to_zero(fast):
    pool_id = autoscale_pool(fast, BY_PENDING_TASKS, slots=1)
    time.sleep(FAST * 1.5)
    pool = fast.get_pool(pool_id)
    assert (pool.target_dedicated_nodes, pool.current_dedicated_nodes) == (0, 0)   # no work, no nodes
    job_id = make_job(fast, pool_id)
    fast.create_tasks(job_id, [bm.BatchTaskCreateOptions(id=f"t{i}", command_line=py("import time; time.sleep(2)"))
                               for i in range(5)])
    wait_for(lambda: fast.get_pool(pool_id).current_dedicated_nodes == 3, FAST * 5, what="three nodes")
    wait_job_done(fast, job_id, timeout=30)
    tasks = list(fast.list_tasks(job_id))
    assert all(t.execution_info.result == bm.BatchTaskExecutionResult.SUCCESS for t in tasks)
    assert all(t.execution_info.requeue_count == 0 for t in tasks)   # taskcompletion: none cut short
    done = time.monotonic()
    wait_for(lambda: fast.get_pool(pool_id).current_dedicated_nodes == 0, FAST * 5, what="zero nodes")
    assert time.monotonic() - done <= FAST * 2.5   # within about one evaluation interval
    run = fast.get_pool(pool_id).auto_scale_run
    assert run.error is None and run.results.startswith("$TargetDedicatedNodes=0;")


def test_a_new_interval_restarts_the_schedule_from_the_request(slow):
    # slow: a 5-minute interval lasts 30 s, so without a restart nothing runs for 30 s.
    pool_id = autoscale_pool(slow, "$TargetDedicatedNodes = 0;")
    first = wait_for(lambda: slow.get_pool(pool_id).auto_scale_run, 5, what="the evaluation at creation")
    time.sleep(SLOW / 10 + 0.2)   # the 30 (scaled) seconds between enables
    enable(slow, pool_id, "$TargetDedicatedNodes = 1;")   # a formula alone keeps the schedule
    time.sleep(1.0)
    assert slow.get_pool(pool_id).auto_scale_run.timestamp == first.timestamp
    time.sleep(SLOW / 10 + 0.2)
    asked = dt.datetime.now(dt.timezone.utc)
    enable(slow, pool_id, interval=dt.timedelta(minutes=6))
    run = wait_for(lambda: (r := slow.get_pool(pool_id).auto_scale_run).timestamp > first.timestamp and r, 5,
                   what="an evaluation at the new schedule's start")
    assert run.timestamp >= asked - dt.timedelta(seconds=1)
    assert run.results.startswith("$TargetDedicatedNodes=1;")
    assert slow.get_pool(pool_id).target_dedicated_nodes == 1


def test_the_option_refuses_a_bad_interval(capsys):
    assert emulator_main(["--autoscale-interval", "0", "--port", "0"]) == 2
    assert "autoscale_interval" in capsys.readouterr().err
