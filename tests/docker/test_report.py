"""The run report of a docker run, opened in a real headless Chromium: a lane per
container slot, a bar per container run (attempt)."""

import json

from tests.support.browser import assert_clean, open_report
from tests.test_local import FAILING_TASK


def test_docker_report_has_a_bar_per_container_run(kit, docker_client, base_image, chromium, tmp_path):
    kit.write_task(FAILING_TASK)  # task 3 of 6 fails, every time
    done = kit.run("--backend", "docker", "--build", "--base-image", base_image, "--image", "superbatch-worker-test:failing",
                   "--run", "docker-report", "--workers", "2", "--retries", "1", "--allow-failures", "--quiet")
    assert done.returncode == 0, done.stderr
    report = kit.run_dir("docker-report") / "report.html"
    opened = open_report(chromium, report, tmp_path / "docker.png")
    assert_clean(opened, report)
    assert opened.bars == {"succeeded": 5, "failed": 1, "retried": 1}, opened.bars
    assert opened.failure_rows == 1 and "task 3 is broken" in opened.text
    facts = [json.loads(line) for line in (kit.run_dir("docker-report") / "facts.jsonl").read_text().splitlines()]
    lanes = {a["where"] for fact in facts if fact["kind"] == "task" for a in fact["attempts"]}
    assert lanes <= {"slot 0", "slot 1"} and lanes, lanes
