"""The run report on the local backend, opened in a real headless Chromium:
one bar per task attempt, the failures, a resumed run's sessions, --report on
its own, and the size of a 20,000-task report."""

import json
import random

from tests.support.browser import assert_clean, open_report

COUNT = 12

# Task 3 fails its first attempt (a mark file tells), task 7 fails until the
# mark "7" exists: with --retries 1 that is COUNT + 2 attempts.
TASK = """
import os, time
def global_config(): return {{"marks": {marks!r}}}
def parameters(): return list(range({count}))
def task(config, i):
    time.sleep(0.02 * (i % 3))
    if i == 3 and not os.path.exists(os.path.join(config["marks"], "3")):
        open(os.path.join(config["marks"], "3"), "w").close()
        raise SystemExit(4)
    if i == 7 and not os.path.exists(os.path.join(config["marks"], "7")):
        raise RuntimeError("seven is unlucky")
    return i
def aggregate(results): return sum(results)
"""


def facts(kit, run):
    return [json.loads(line) for line in (kit.run_dir(run) / "facts.jsonl").read_text().splitlines()]


def test_local_report_has_a_bar_per_attempt_and_the_failures(kit, chromium, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    kit.write_task(TASK.format(marks=str(marks), count=COUNT))
    done = kit.run("--run", "rep", "--workers", "2", "--retries", "1", "--allow-failures", "--summary-json", tmp_path / "summary.json")
    assert done.returncode == 0, done.stderr
    report = kit.run_dir("rep") / "report.html"
    assert f"report: {report}" in done.stderr

    opened = open_report(chromium, report, tmp_path / "local.png")
    assert_clean(opened, report)
    # 12 tasks, task 3 once more (retried, then succeeded), task 7 twice (retried, then failed)
    assert opened.bars == {"succeeded": COUNT - 1, "failed": 1, "retried": 2}, opened.bars
    assert opened.failure_rows == 1 and "seven is unlucky" in opened.text
    assert (tmp_path / "local.png").stat().st_size > 10_000
    # the summary carries the same facts as the run folder
    summary = json.loads((tmp_path / "summary.json").read_text())
    tasks = [fact for fact in facts(kit, "rep") if fact["kind"] == "task"]
    assert summary["facts"] == tasks and len(tasks) == COUNT
    assert all(a["start"] <= a["end"] and a["where"].startswith("process ") for t in tasks for a in t["attempts"])

    # Resumed with task 7 fixed: the report covers both sessions, and no failure is left.
    (marks / "7").touch()
    again = kit.run("--run", "rep", "--workers", "2", "--retries", "1")
    assert again.returncode == 0, again.stderr
    opened = open_report(chromium, report, tmp_path / "resumed.png")
    assert_clean(opened, report)
    assert opened.bars == {"succeeded": COUNT, "failed": 1, "retried": 2}, opened.bars
    assert opened.failure_rows == 0
    assert "2 sessions" in opened.text

    # --report alone writes it again from the facts, running nothing.
    before = (kit.run_dir("rep") / "facts.jsonl").read_text()
    report.unlink()
    alone = kit.run("--report", "--run", "rep")
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.strip() == str(report) and report.exists()
    assert (kit.run_dir("rep") / "facts.jsonl").read_text() == before


def test_report_needs_an_existing_run(kit):
    for argv, message in ((["--report"], "add --run NAME"), (["--report", "--run", "nosuch"], "there is no run 'nosuch'")):
        result = kit.run(*argv)
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_20000_tasks_fit_in_5_mb_and_draw(chromium, tmp_path):
    from superbatch.report import write_report

    random.seed(3)
    run = tmp_path / "big"
    run.mkdir()
    lines = [{"kind": "session", "session": 1, "backend": "azure", "started": 1_700_000_000.0}]
    nodes = [f"tvmps_{n:040x}_d" for n in range(100)]  # node ids as long as Batch's
    clock = {node: 1_700_000_060.0 for node in nodes}
    for index in range(20_000):
        node = nodes[index % 100]
        start = clock[node] + random.random()
        clock[node] = end = start + random.uniform(5, 60)
        ok = index % 500
        lines.append({"kind": "task", "session": 1, "index": index, "outcome": "succeeded" if ok else "failed", "exit_code": 0 if ok else 1,
                      "attempts": [{"start": start, "end": end, "where": node, "outcome": "succeeded" if ok else "failed"}], "requeues": 0,
                      **({} if ok else {"failure_info": "", "stderr_tail": "Traceback (most recent call last):\n" * 20})})
    lines += [{"kind": "nodes", "session": 1, "t": 1_700_000_000.0 + 60 * i, "dedicated": 100, "spot": 0} for i in range(300)]
    lines.append({"kind": "phases", "session": 1, "phases": {"stage": 3.0, "upload": 20.0, "submit": 8.0, "run": 18000.0}, "ended": 1_700_018_000.0})
    (run / "facts.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))

    report = write_report(run)
    size = report.stat().st_size
    print(f"20,000-task report: {size / 1e6:.2f} MB")
    assert size < 5_000_000
    opened = open_report(chromium, report, tmp_path / "big.png")
    assert_clean(opened, report)
    assert opened.bars == {"succeeded": 19_960, "failed": 40}
    assert opened.failure_rows == 40
    assert set(opened.traces) >= {"dedicated nodes", "spot nodes"}
