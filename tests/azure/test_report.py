"""The run report of an azure run on the emulator with a failure, a retry and
preempted spot nodes, opened in a real headless Chromium: one bar per attempt
Batch counts, the node each ran on, the pool's node count beneath."""

import json

from tests.support.browser import assert_clean, open_report
from tests.test_report import COUNT, TASK


def test_azure_report_shows_retries_failures_and_the_pool(kit, make_cloud, chromium, tmp_path):
    cloud = make_cloud(faults="preempt=0.3,preempt_after=0.3,seed=5", preempt_recovery=0.3)
    marks = tmp_path / "marks"
    marks.mkdir()
    kit.write_task(TASK.replace("time.sleep(0.02 * (i % 3))", "time.sleep(0.6)").format(marks=str(marks), count=COUNT))
    done = cloud.run(kit, "azure-report", "--retries", "1", "--allow-failures", "--dedicated-nodes", "1", "--spot-nodes", "2",
                     "--task-slots", "2", "--summary-json", tmp_path / "summary.json")
    assert done.returncode == 0, done.stderr
    assert cloud.emulator.stats()["faults"].get("preempt", 0) >= 1  # spot nodes were preempted

    report = kit.run_dir("azure-report") / "report.html"
    opened = open_report(chromium, report, tmp_path / "azure.png")
    assert_clean(opened, report)
    # One bar per attempt as Batch counts them (1 + retryCount + requeueCount), read from the emulator itself.
    tasks = cloud.job_tasks("superbatch-azure-report")
    expected = sum(1 + t.execution_info.retry_count + t.execution_info.requeue_count for t in tasks)
    assert sum(opened.bars.values()) == expected, (opened.bars, expected)
    assert opened.bars["failed"] == 1 and opened.bars["retried"] >= 2, opened.bars  # task 7 failed twice, task 3 once
    assert opened.failure_rows == 1 and "seven is unlucky" in opened.text
    assert {"dedicated nodes", "spot nodes"} <= set(opened.traces)
    # Each last attempt names the node Batch ran it on.
    nodes = {t.id: t.node_info.node_id for t in tasks}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {f"azure-report-{fact['index']}": fact["attempts"][-1]["where"] for fact in summary["facts"]} == nodes
    assert summary["nodes"] and all(sample["dedicated"] + sample["spot"] <= 3 for sample in summary["nodes"])
    # The cost block: the pool's node-hours as the summary has them, on the page.
    cost = summary["cost"]
    assert cost["node_hours_dedicated"] + cost["node_hours_spot"] > 0
    assert "dedicated node-hours" in opened.text and f"{cost['node_hours_dedicated']:g}" in opened.text
