"""20,000 tasks against the emulator: the run completes with the right
aggregate, and the controller's peak memory grows by at most 50 MB from a
2,000-task run to a 20,000-task one (issue 7's goal).

Each task copies its parameters to its output (`/bin/cp`), so the run costs
what the kit and the emulator cost, not what the tasks do. The controller talks
to the emulator and to Azurite directly (no test proxy): the proxies run in the
test's process, beside the emulator, and would only slow both down.

It is part of the default suite (about 5 minutes on 2 cores); `pytest -m "not
scale"` leaves it out for a quicker loop.
"""

import json
import os
import subprocess
import time

import pytest

from tests.kit import last_line
from tests.support.servers import kit_environment, start_batch_emulator

pytestmark = [pytest.mark.scale, pytest.mark.timeout(30 * 60)]

IDENTITY_TASK = """
    def global_config(): return None
    def parameters(): return range({count})
    def task(config, i): return i  # what `cp resource.pickle output.pickle` does
    def aggregate(results): return sum(results)
"""

SMALL, LARGE = int(os.environ.get("SCALE_SMALL", 2_000)), int(os.environ.get("SCALE_LARGE", 20_000))
GROWTH_LIMIT_MB = 50


def run_measured(kit, emulator, azurite, name: str, count: int, tmp_path) -> dict:
    """Run the controller on `count` tasks; its exit code, last line, seconds and peak RSS."""
    kit.write_task(IDENTITY_TASK.format(count=count))
    env = {**os.environ, **kit_environment(emulator.account, emulator.key, emulator.endpoint, azurite.blob_endpoint)}
    summary = tmp_path / f"{name}.json"
    command = kit.command("--backend", "azure", "--run", name, "--poll-interval", "1", "--quiet",
                          "--dedicated-nodes", "4", "--task-slots", "8", "--task-command", "/bin/cp resource.pickle output.pickle",
                          "--summary-json", summary)
    started = time.monotonic()
    with open(tmp_path / f"{name}.out", "w") as out, open(tmp_path / f"{name}.err", "w") as err:
        process = subprocess.Popen(command, cwd=kit.path, env=env, stdout=out, stderr=err)
        # wait4: this child's own peak resident set (kB on Linux), nobody else's
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    return {
        "returncode": process.returncode,
        "last": last_line((tmp_path / f"{name}.out").read_text()),
        "stderr": (tmp_path / f"{name}.err").read_text()[-3000:],
        "seconds": seconds,
        "peak_mb": usage.ru_maxrss / 1024,
        "phases": json.loads(summary.read_text())["phases"] if summary.exists() else {},
    }


def test_20000_tasks_complete_and_memory_grows_at_most_50_mb(kit, azurite, tmp_path):
    emulator = start_batch_emulator()
    try:
        small = run_measured(kit, emulator, azurite, "small", SMALL, tmp_path)
        assert small["returncode"] == 0, small["stderr"]
        assert small["last"] == str(sum(range(SMALL)))
        large = run_measured(kit, emulator, azurite, "large", LARGE, tmp_path)
        assert large["returncode"] == 0, large["stderr"]
        assert large["last"] == str(sum(range(LARGE)))
        assert emulator.stats()["tasks"]["succeeded"] == SMALL + LARGE
    finally:
        emulator.stop()
    growth = large["peak_mb"] - small["peak_mb"]
    print(f"\npeak RSS of the controller: {SMALL} tasks {small['peak_mb']:.1f} MB in {small['seconds']:.0f} s {small['phases']}; "
          f"{LARGE} tasks {large['peak_mb']:.1f} MB in {large['seconds']:.0f} s {large['phases']}; growth {growth:.1f} MB")
    assert growth <= GROWTH_LIMIT_MB
