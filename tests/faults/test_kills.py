"""The controller killed (SIGKILL) at ten seeded random moments spread over
every phase, each time followed by a rerun with the same --run: the aggregate
is the fault-free one, no task is created or run twice, no input is uploaded
twice and no output is downloaded twice.

"Twice" is judged with a snapshot taken right after the kill: what was complete
at the kill (a blob in Azurite, an output in runs/<run>/) must not be done
again; what was only in flight may be. Requests are counted as they reach the
proxies (`arrived`), whatever became of them, so a repeat cannot hide behind a
request cut off by the kill.

While the controller is to be killed, the proxies slow each phase down so that
it lasts long enough to be hit: resource uploads, task submission (one
addtaskcollection request of at most 100 tasks at a time, with --upload-threads 1),
the tasks themselves, and output downloads. The rerun goes at full speed.
"""

import collections
import os
import random
import signal
import subprocess
import time

import pytest

from tests.faults.conftest import LOGGING_TASK, TASK_COMMAND
from tests.kit import last_line

COUNT = 150
EXPECTED = str(sum(i * 3 for i in range(COUNT)))
PHASES = ["staging", "submitting", "following", "downloading"]
SLOW = {("PUT", "_resource.pickle"): 0.01, ("POST", "/addtaskcollection"): 0.5, ("GET", "_output.pickle"): 0.2}
TASK_SECONDS = 0.2


def moments(seed: int = 20240607, count: int = 10) -> list:
    """(phase, progress threshold, extra seconds): kill once the phase has made that much
    progress, plus that long. Every phase gets two moments, two phases a third."""
    rng = random.Random(seed)
    phases = PHASES * 2 + rng.sample(PHASES, count - 2 * len(PHASES))
    rng.shuffle(phases)
    chosen = []
    for phase in phases:
        if phase == "staging":  # resource uploads done (0: as soon as the run folder appears)
            threshold = rng.randint(0, COUNT - 1)
        elif phase == "submitting":  # addtaskcollection requests answered (0: the first one sent)
            threshold = rng.randint(0, 1)
        else:  # tasks succeeded in the emulator / outputs home
            threshold = rng.randint(1, COUNT - 40)
        chosen.append((phase, threshold, round(rng.uniform(0, SLOW[("POST", "/addtaskcollection")]), 3)))
    return chosen


MOMENTS = moments()


def reached(cloud, kit, run: str, phase: str, threshold: int) -> bool:
    if phase == "staging":
        if threshold == 0:
            return kit.run_dir(run).exists()
        return cloud.blobs.count("PUT", "_resource.pickle") >= threshold
    if phase == "submitting":
        if threshold == 0:
            return sum(cloud.batch.arrived("POST", "/addtaskcollection").values()) >= 1
        return cloud.batch.count("POST", "/addtaskcollection") >= threshold
    if phase == "following":
        return cloud.emulator.stats()["tasks"].get("succeeded", 0) >= threshold
    if phase == "downloading":
        return len(list(kit.run_dir(run).glob("task_*_output.pickle"))) >= threshold
    raise ValueError(phase)


def test_the_moments_cover_every_phase():
    assert collections.Counter(phase for phase, _, _ in MOMENTS).keys() == set(PHASES)
    assert len(MOMENTS) == 10


@pytest.mark.parametrize("moment", range(len(MOMENTS)), ids=[f"{i}-{m[0]}" for i, m in enumerate(MOMENTS)])
def test_killed_then_rerun_repeats_nothing(kit, make_cloud, tmp_path, moment):
    phase, threshold, extra = MOMENTS[moment]
    cloud = make_cloud()  # a new emulator and new proxies; Azurite is the session's, hence a new run name
    log = tmp_path / "ran.log"
    kit.write_task(LOGGING_TASK.format(log=str(log), count=COUNT, sleep=TASK_SECONDS))
    run = f"killed{moment}"
    cloud.blobs.delays.update({key: seconds for key, seconds in SLOW.items() if key[1] != "/addtaskcollection"})
    cloud.batch.delays[("POST", "/addtaskcollection")] = SLOW[("POST", "/addtaskcollection")]
    more = ["--dedicated-nodes", "2", "--task-slots", "8", "--upload-threads", "1", "--task-command", TASK_COMMAND]
    flags = cloud.flags(kit, run, *more)
    with open(tmp_path / "killed.err", "w") as err:
        process = subprocess.Popen(kit.command(*flags), cwd=kit.path, env={**os.environ, **cloud.env},
                                   stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 120
    while not reached(cloud, kit, run, phase, threshold):
        assert process.poll() is None, f"the run ended before the moment came: {(tmp_path / 'killed.err').read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"never reached {phase} {threshold}"
        time.sleep(0.005)
    time.sleep(extra)
    assert process.poll() is None, "the run ended before the moment came"
    process.send_signal(signal.SIGKILL)
    process.wait()

    # The snapshot: what was complete when the controller died.
    container = cloud.container(run)
    uploaded_at_kill = {blob.name for blob in container.list_blobs(include=["metadata"]) if blob.metadata} if container.exists() else set()
    home_at_kill = {int(path.name.split("_")[1]) for path in kit.run_dir(run).glob("task_*_output.pickle")}
    assert len(home_at_kill) < COUNT
    cloud.blobs.delays.clear()
    cloud.batch.delays.clear()

    rerun_started = time.monotonic()
    done = cloud.run(kit, run, *more)  # the same command again
    rerun_seconds = time.monotonic() - rerun_started
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == EXPECTED

    # No task created or run twice.
    assert collections.Counter(map(int, log.read_text().split())) == collections.Counter(range(COUNT))
    assert cloud.emulator.stats()["tasks"]["started"] == COUNT
    tasks = cloud.job_tasks(f"superbatch-{run}")
    assert sorted(task.id for task in tasks) == sorted(f"{run}-{i}" for i in range(COUNT))

    # No input uploaded twice: a blob that was there at the kill was not sent again.
    puts = cloud.blobs.arrived("PUT", ".pickle")
    prefix = f"/devstoreaccount1/superbatch-{run}/"
    inputs = {path[len(prefix):]: n for path, n in puts.items() if "_output" not in path}
    assert set(inputs) == {f"{run}/config.pickle", *(f"{run}/task_{i}_resource.pickle" for i in range(COUNT))}
    for name, times in inputs.items():
        assert times == 1 or (name not in uploaded_at_kill and times == 2), f"{name}: sent {times} times, there at the kill: {name in uploaded_at_kill}"

    # No output downloaded twice: one that was home at the kill was not fetched again.
    gets = cloud.blobs.arrived("GET", "_output.pickle")
    assert len(gets) == COUNT
    for index in range(COUNT):
        times = gets[f"{prefix}{run}/task_{index}_output.pickle"]
        assert times == 1 or (index not in home_at_kill and times == 2), f"output {index}: fetched {times} times, home at the kill: {index in home_at_kill}"
    repeated = sum(1 for n in gets.values() if n > 1) + sum(1 for n in inputs.values() if n > 1)
    print(f"\nkilled while {phase} (at {threshold} + {extra} s): {len(uploaded_at_kill)} inputs up, "
          f"{len(home_at_kill)} outputs home at the kill; {repeated} in-flight transfers repeated; rerun {rerun_seconds:.1f} s")
