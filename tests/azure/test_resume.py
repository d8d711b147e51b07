"""What the README promises about a resumed azure run, each claim on its own,
on Azurite and the Batch emulator:

    tasks already added to the Batch job are not sent again
    a resumed run whose inputs are all uploaded makes no storage request for them
    a task that failed runs again when the run is rerun
    outputs already home are not downloaded again

The interrupted run is made deterministic rather than timed: tasks 0..FREE-1
end at once, the others wait until the test creates a release file. The
controller is killed (SIGKILL) once those FREE outputs are home, which is
after every task was added and the journal said so (submission ends before
following starts). Then the release file is created and the same command run
again. Each result is compared with the plain serial loop.
"""

import collections
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from tests.faults.test_kills import reached
from tests.kit import last_line, plain_loop
from tests.support.servers import AZURITE_ACCOUNT

COUNT = 12
FREE = 4  # tasks that end in the interrupted run; the rest wait for the release file
BROKEN = 3  # the task that fails while the flag file exists
SLOTS = ["--dedicated-nodes", "2", "--task-slots", "8"]  # every task runs at once: the emulator picks tasks in no set order

HELD_TASK = """
    import os
    import time

    def global_config(): return {{"log": {log!r}, "release": {release!r}, "broken": {broken!r}}}
    def parameters(): return list(range({count}))
    def task(config, i):
        with open(config["log"], "a") as log:  # one line each time the task runs
            log.write(f"{{i}}\\n")
        if i == {broken_index} and os.path.exists(config["broken"]):
            raise RuntimeError(f"task {{i}} fails while the flag file exists")
        while i >= {free} and not os.path.exists(config["release"]):
            time.sleep(0.05)
        return i * 3 + 1
    def aggregate(results): return sum(results)
"""


@pytest.fixture
def files(kit, tmp_path):
    paths = {name: tmp_path / name for name in ("ran.log", "release", "broken")}
    kit.write_task(HELD_TASK.format(log=str(paths["ran.log"]), release=str(paths["release"]), broken=str(paths["broken"]),
                                    count=COUNT, free=FREE, broken_index=BROKEN))
    return paths


def runs_of_each_task(log) -> collections.Counter:
    return collections.Counter(map(int, log.read_text().split()))


def journal(kit, run: str) -> dict:
    return json.loads((kit.run_dir(run) / "run.json").read_text())["backends"]["azure"]


@dataclass
class Resumed:
    """An interrupted run and its rerun, with what the proxies and the emulator saw."""
    run: str
    rerun: subprocess.CompletedProcess
    home_at_kill: set
    ran: collections.Counter  # task index -> times it ran, over both runs
    blob_requests: collections.Counter  # (method, path) -> requests that reached Azurite's proxy during the rerun
    blob_urls: list  # every blob URL asked for during the rerun, in order
    batch_requests: collections.Counter  # the same, for the Batch emulator


def snapshot(proxy):
    with proxy.lock:
        return collections.Counter(proxy.arrivals), len(proxy.urls)


def since(proxy, before):
    arrivals, urls = before
    with proxy.lock:
        return collections.Counter(proxy.arrivals) - arrivals, proxy.urls[urls:]


@pytest.fixture
def resumed(kit, cloud, files, tmp_path) -> Resumed:
    run = "resumed"
    flags = cloud.flags(kit, run, *SLOTS)
    with open(tmp_path / "killed.err", "w") as err:
        process = subprocess.Popen(kit.command(*flags), cwd=kit.path, env={**os.environ, **cloud.env},
                                   stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 120
        while not reached(cloud, kit, run, "downloading", FREE):  # the free tasks' outputs are home, the rest wait
            assert process.poll() is None, (tmp_path / "killed.err").read_text()[-2000:]
            assert time.monotonic() < deadline, "the free tasks never came home: " + (tmp_path / "killed.err").read_text()[-2000:]
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    home_at_kill = set(kit.outputs(run))
    assert home_at_kill == set(range(FREE))
    state = journal(kit, run)
    assert state["added"] == [[0, COUNT - 1]] and state.get("uploaded")  # what the rerun may rely on

    files["release"].touch()
    blobs, batch = snapshot(cloud.blobs), snapshot(cloud.batch)
    rerun = cloud.run(kit, run, *SLOTS)
    assert rerun.returncode == 0, rerun.stderr
    blob_requests, blob_urls = since(cloud.blobs, blobs)
    batch_requests, _ = since(cloud.batch, batch)
    ran = runs_of_each_task(files["ran.log"])
    assert last_line(rerun.stdout) == plain_loop(kit.path)  # (the loop writes to the log too)
    return Resumed(run, rerun, home_at_kill, ran, blob_requests, blob_urls, batch_requests)


def test_tasks_already_added_are_not_sent_again(cloud, resumed):
    """Counted in the requests' bodies: a task sent twice meets TaskExists, so the
    job's task ids could not tell."""
    assert cloud.emulator.stats()["tasks"]["received"] == COUNT
    assert not [key for key in resumed.batch_requests if key[1].endswith("/addtaskcollection")]
    assert resumed.ran == collections.Counter(range(COUNT))


def test_inputs_all_uploaded_make_no_storage_request(cloud, kit, resumed):
    """The kit's own blob requests (those without a SAS: the tasks' are signed) in
    the rerun are the credentials check on the container and the downloads of the
    outputs that were not home: no creation of the container, no listing, no upload."""
    container = f"/{AZURITE_ACCOUNT}/{journal(kit, resumed.run)['container']}"
    own = [urlsplit(url) for url in resumed.blob_urls if "sig=" not in url]
    assert [(url.path, url.query) for url in own if not url.path.endswith("_output.pickle")] == [(container, "restype=container")]
    assert not [key for key in resumed.blob_requests if key[0] == "PUT" and not key[1].endswith("_output.pickle")]


def test_outputs_already_home_are_not_downloaded_again(resumed):
    """Two guards in flow.py keep this so (the pending list leaves home outputs out;
    an output found home is not fetched): either alone suffices, so only with both
    switched off does this test fail."""
    downloads = {int(path.rsplit("task_", 1)[1].split("_")[0]): n
                 for (method, path), n in resumed.blob_requests.items() if method == "GET" and path.endswith("_output.pickle")}
    assert downloads == {index: 1 for index in range(COUNT) if index not in resumed.home_at_kill}


def test_a_failed_task_runs_again_on_rerun(kit, cloud, files):
    """Task 3 fails while the flag file exists; the flag is removed (task.py "fixed")
    and the run rerun: task 3 runs a second time, as a new Batch task (a task
    cannot change once added, so it is never reactivated), and the result is
    the plain loop's. The first run's job ended with the run."""
    files["release"].touch()
    files["broken"].touch()
    failed = cloud.run(kit, "failed")
    assert failed.returncode == 1
    assert f"1 of {COUNT} tasks failed (first: task {BROKEN}, exit code 1)" in failed.stderr
    assert set(kit.outputs("failed")) == set(range(COUNT)) - {BROKEN}

    files["broken"].unlink()
    rerun = cloud.run(kit, "failed")
    assert rerun.returncode == 0, rerun.stderr
    assert runs_of_each_task(files["ran.log"]) == collections.Counter([*range(COUNT), BROKEN])
    assert last_line(rerun.stdout) == plain_loop(kit.path)
    stats = cloud.emulator.stats()["tasks"]
    assert stats["received"] == COUNT + 1 and stats["started"] == COUNT + 1
    assert cloud.emulator.client().get_job("superbatch-failed").state in ("terminating", "completed")


def test_a_task_that_failed_while_the_controller_was_away_runs_again_as_a_new_task(kit, cloud, files, tmp_path):
    """The controller is killed; meanwhile task 3 fails. The rerun reattaches to
    the job, which still runs the held tasks, and adds task 3 again under a new
    id (a reactivated task would rerun with its old definition)."""
    run = "away"
    files["broken"].touch()
    flags = cloud.flags(kit, run, *SLOTS)
    process = subprocess.Popen(kit.command(*flags), cwd=kit.path, env={**os.environ, **cloud.env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (reached(cloud, kit, run, "downloading", FREE - 1) and cloud.emulator.stats()["tasks"].get("failed")):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert BROKEN not in kit.outputs(run)

    files["broken"].unlink()
    files["release"].touch()
    rerun = cloud.run(kit, run, *SLOTS)
    assert rerun.returncode == 0, rerun.stderr
    assert "reattaching to job superbatch-away" in rerun.stderr
    assert last_line(rerun.stdout) == plain_loop(kit.path)
    assert runs_of_each_task(files["ran.log"])[BROKEN] == 2 + 1  # twice by the kit, once by the plain loop
    assert cloud.emulator.stats()["tasks"]["received"] == COUNT + 1
    ids = {task.id for task in cloud.job_tasks("superbatch-away")}
    assert f"{run}-{BROKEN}-r1" in ids and len(ids) == COUNT + 1
