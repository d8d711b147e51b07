"""--task-timeout on the azure backend: maxWallClockTime on every task, and the
emulator's stopped task reported as timed out; the others as the plain loop."""

import json

from tests.test_timeout import SLOW_INDEX, check_timed_out_run, expected_others, write_timeout_task


def test_azure_task_over_time_is_stopped_by_the_service_and_reported(kit, cloud, tmp_path):
    expected = expected_others(kit, tmp_path)
    write_timeout_task(kit, 600)
    summary = tmp_path / "summary.json"
    done = cloud.run(kit, "slow", "--task-timeout", "5s", "--summary-json", summary, timeout=300)
    check_timed_out_run(kit, done, "slow", expected, summary, limit="5s")
    tasks = {task.id: task for task in cloud.job_tasks("superbatch-slow")}
    assert all(task.constraints.max_wall_clock_time.total_seconds() == 5 for task in tasks.values())
    slow = tasks[f"slow-{SLOW_INDEX}"]
    assert slow.execution_info.failure_info.code == "MaxWallClockTimeExceeded"
    assert json.loads(summary.read_text())["failures"][0]["exit_code"] == slow.execution_info.exit_code
