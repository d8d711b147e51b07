"""The azure backend on Azurite and the Batch emulator: staging rate, Batch
requests per task, last-task-to-aggregate latency, the controller's memory.

Everything runs on this machine, in one run of this script:

  staging   the kit's upload code path (BlobStore.upload_files, with the
            backend's settings and its default --upload-threads) against the
            raw azure-storage-blob SDK on as many threads (a ThreadPoolExecutor
            of the same size), and against a loop of single uploads: the same
            N staged task inputs, the same Azurite, each upload timed in a
            fresh process, rounds in ABBA order; ratios are medians of the
            rounds' ratios, with their min–max range.
  run       the real CLI (`controller.py --backend azure`) over N tasks whose
            command is `/bin/cp resource.pickle output.pickle` (so the
            aggregate is the sum of the parameters), at the default poll
            interval unless told: Batch requests per task from the emulator's
            counters; seconds from the last task's end (the emulator's
            executionInfo.endTime, the latest over all tasks) to the moment the
            aggregate line appeared on the controller's stdout; the
            controller's peak RSS (getrusage of a fresh parent per run).

    python -m bench.azure [--tasks 2000] [--rounds 5] [--poll-interval 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.stats import Spread, order, ratios
from tests.kit import Kit
from tests.support.servers import kit_environment, start_azurite, start_batch_emulator

REPO = Path(__file__).resolve().parent.parent
DEFAULT_POLL = 5.0  # the kit's default --poll-interval
CHEAP_COMMAND = "/bin/cp resource.pickle output.pickle"  # a task that does nothing: its result is its parameter

TASK = """
    def global_config():
        return None

    def parameters():
        return list(range({count}))

    def task(config, i):
        return i

    def aggregate(results):
        return sum(results)
"""

# Each upload side runs in a fresh Python, timed from inside around the
# uploads only (imports, client and container creation excluded alike).
UPLOAD = r"""
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
mode, kit, listing, container_name, threads = sys.argv[1:6]
sys.path.insert(0, kit)
items = json.load(open(listing))
if mode == "kit":
    from superbatch.cli import build_parser
    from superbatch.backends.azure.settings import AzureSettings
    from superbatch.backends.azure.storage import BlobStore
    options = build_parser().parse_args(["--backend", "azure", "--container", container_name, "--upload-threads", threads])
    store = BlobStore(AzureSettings.from_environment(options, "bench"))
    store.create_container()
    started = time.perf_counter()
    count = store.upload_files([tuple(item) for item in items])
else:
    import os
    from azure.storage.blob import BlobServiceClient
    container = BlobServiceClient.from_connection_string(os.environ["STORAGE_ACCOUNT_CONNECTION_STRING"]).get_container_client(container_name)
    container.create_container()
    def upload(item):
        name, path, _ = item
        with open(path, "rb") as data:
            container.upload_blob(name, data, overwrite=True)
    started = time.perf_counter()
    if mode == "sdk":
        with ThreadPoolExecutor(int(threads)) as pool:
            count = sum(1 for _ in pool.map(upload, items))
    else:  # one at a time
        count = 0
        for item in items:
            upload(item)
            count += 1
seconds = time.perf_counter() - started
assert count == len(items), (count, len(items))
print(seconds)
"""

# A fresh parent for each controller run, so that RUSAGE_CHILDREN is that one
# controller's peak RSS (the emulator runs the tasks in the benchmark's own
# process, not under this one).
PARENT = r"""
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))  # KiB on Linux
sys.exit(code)
"""


@dataclass
class Cloud:
    azurite: object
    emulator: object

    @property
    def env(self) -> dict:
        return kit_environment(self.emulator.account, self.emulator.key, self.emulator.endpoint, self.azurite.blob_endpoint)


@contextmanager
def local_cloud(azurite=None):
    """Azurite (unless given) and a fresh Batch emulator that runs tasks on this host."""
    own = azurite is None
    azurite = azurite or start_azurite()
    emulator = start_batch_emulator(docker="off")
    try:
        yield Cloud(azurite, emulator)
    finally:
        emulator.stop()
        if own:
            azurite.stop()


@dataclass
class RunResult:
    tasks: int
    poll_interval: float
    requests: dict
    request_total: int
    summary: dict
    peak_rss_mb: float
    latency: float  # last task's end -> aggregate printed, seconds
    wall: float
    lines: list = field(default_factory=list)

    @property
    def requests_per_task(self) -> float:
        return self.request_total / self.tasks


def cli_run(cloud: Cloud, kit: Kit, run: str, count: int, poll_interval: float, nodes: int = 4, slots: int = 8) -> RunResult:
    """One `controller.py --backend azure` run of `count` cheap tasks on a fresh job."""
    kit.write_task(TASK.format(count=count))
    summary_path = kit.path / f"{run}.summary.json"
    rss_path = kit.path / f"{run}.rss"
    command = kit.command("--backend", "azure", "--run", run, "--quiet", "--summary-json", summary_path,
                          "--poll-interval", poll_interval, "--task-command", CHEAP_COMMAND,
                          "--dedicated-nodes", nodes, "--task-slots", slots, "--delete-container")
    cloud.emulator.reset_stats()
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-c", PARENT, str(rss_path), *command], cwd=kit.path,
                            env={**os.environ, **cloud.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    errors: list = []
    reader = threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True)
    reader.start()
    lines = []  # (time.time() when read, line)
    for line in proc.stdout:
        lines.append((time.time(), line.rstrip("\n")))
    code = proc.wait()
    reader.join()
    wall = time.time() - started
    stats = cloud.emulator.stats()["requests"]  # before our own listing below
    if code != 0:
        raise RuntimeError(f"controller exited with {code}: {''.join(errors)[-2000:]}")
    printed_at, aggregate = lines[-1]
    expected = str(sum(range(count)))
    if aggregate != expected:
        raise RuntimeError(f"aggregate {aggregate!r}, expected {expected}")
    job_id = f"superbatch-{run}"
    ends = [task.execution_info.end_time for task in cloud.emulator.client().list_tasks(job_id, select=["id", "executionInfo"])]
    if len(ends) != count or any(end is None for end in ends):
        raise RuntimeError(f"{len(ends)} tasks listed, expected {count} ended ones")
    last_end = max(ends).timestamp()
    return RunResult(
        tasks=count, poll_interval=poll_interval,
        requests={op: sum(by_status.values()) for op, by_status in stats["byOperation"].items()},
        request_total=stats["total"], summary=json.loads(summary_path.read_text()),
        peak_rss_mb=int(rss_path.read_text()) / 1024, latency=printed_at - last_end, wall=wall,
        lines=[line for _, line in lines])


def default_upload_threads() -> int:
    """The kit's own --upload-threads default: the concurrency both sides get."""
    from superbatch.cli import build_parser
    return build_parser().parse_args(["--backend", "azure"]).upload_threads


@dataclass
class StagingResult:
    files: int
    threads: int
    kit: list  # seconds per round
    sdk: list
    serial: list

    def rate(self, side: list) -> float:
        return self.files / statistics.median(side)

    @property
    def kit_over_sdk(self) -> Spread:  # a rate ratio: the other side's time over the kit's
        return ratios(self.sdk, self.kit)

    @property
    def kit_over_serial(self) -> Spread:
        return ratios(self.serial, self.kit)


def staging(cloud: Cloud, kit: Kit, count: int, rounds: int, threads: int | None = None) -> StagingResult:
    """The same `count` staged inputs uploaded by the kit, the raw SDK (as many threads) and a loop."""
    threads = threads or default_upload_threads()
    kit.write_task(TASK.format(count=count))
    staged = subprocess.run([sys.executable, "-c", STAGE, str(kit.path), "upload-bench"], cwd=kit.path,
                            capture_output=True, text=True, check=True)
    items = json.loads(staged.stdout)
    listing = kit.path / "upload-items.json"
    listing.write_text(json.dumps(items))
    times: dict = {"kit": [], "sdk": [], "serial": []}
    for round_ in range(rounds):
        for mode in order(times, round_):
            container = f"bench-{mode}-{round_}"
            done = subprocess.run([sys.executable, "-c", UPLOAD, mode, str(kit.path), str(listing), container, str(threads)],
                                  cwd=kit.path, env={**os.environ, **cloud.env}, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{mode} upload failed: {done.stderr[-2000:]}")
            times[mode].append(float(done.stdout.strip().splitlines()[-1]))
            cloud.azurite.blob_service().delete_container(container)
    return StagingResult(len(items), threads, times["kit"], times["sdk"], times["serial"])


# Stage task.py's inputs into runs/<run>/ with the kit's own Stager, and list
# them as the azure backend does: (blob name, local path, content hash).
STAGE = r"""
import json, sys
kit, name = sys.argv[1:3]
sys.path.insert(0, kit)
from pathlib import Path
from constants import GLOBAL_CONFIG_FILE, LOCAL_RESOURCE_PATTERN
from superbatch.runs import RunFolder
from superbatch.staging import Stager
from superbatch.taskdef import load_task_definition
run = RunFolder(Path(kit) / "runs", name)
Stager(run).stage(load_task_definition(Path(kit)))
inputs = run.journal["inputs"]
prefix = name + "/"
items = [(prefix + GLOBAL_CONFIG_FILE, str(run.config_path), inputs["config"])]
items += [(prefix + LOCAL_RESOURCE_PATTERN.format(i), str(run.resource_path(i)), digest) for i, digest in enumerate(inputs["tasks"])]
print(json.dumps(items))
"""


def measure(tasks: int = 2000, rounds: int = 5, poll_interval: float = DEFAULT_POLL, say=print) -> dict:
    """Every azure figure, measured in this one call (fresh servers)."""
    with tempfile.TemporaryDirectory(prefix="bench-azure-") as folder, local_cloud() as cloud:
        kit = Kit(Path(folder))
        say(f"staging {tasks} inputs: kit vs raw SDK vs one at a time, {rounds} ABBA rounds ...")
        upload = staging(cloud, kit, tasks, rounds)
        say(f"a {tasks}-task run through the CLI, poll interval {poll_interval:g} s ...")
        run = cli_run(cloud, kit, "bench", tasks, poll_interval)
    return {"staging": upload, "run": run}


def report(figures: dict) -> list:
    upload: StagingResult = figures["staging"]
    run: RunResult = figures["run"]
    kit_rate, sdk_rate, serial_rate = upload.rate(upload.kit), upload.rate(upload.sdk), upload.rate(upload.serial)
    cli_upload = run.summary["phases"].get("upload")
    return [
        f"staging: kit {kit_rate:.0f} files/s, raw SDK {upload.threads} threads {sdk_rate:.0f} files/s, one at a time {serial_rate:.0f} files/s"
        f" ({upload.files} files, medians of {len(upload.kit)} rounds; the CLI run's own upload phase: "
        f"{run.tasks + 1} files in {cli_upload:.2f} s = {(run.tasks + 1) / cli_upload:.0f} files/s)",
        f"(1) staging rate / raw SDK rate, both {upload.threads} threads: {upload.kit_over_sdk.text()} (goal >= 0.9)",
        f"(2) staging rate / one-at-a-time loop:     {upload.kit_over_serial.text('.1f')}",
        f"(3) Batch requests per task, {run.tasks} tasks, poll {run.poll_interval:g} s: {run.requests_per_task:.4f}"
        f" ({run.request_total} requests: {', '.join(f'{op} {n}' for op, n in sorted(run.requests.items()))}) (goal <= 0.05)",
        f"(4) last task's end -> aggregate printed:  {run.latency:.2f} s = {run.latency / run.poll_interval:.2f} poll intervals (goal <= 2)",
        f"controller peak RSS over the {run.tasks}-task run: {run.peak_rss_mb:.0f} MB; run wall time {run.wall:.1f} s",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--poll-interval", type=float, default=DEFAULT_POLL)
    options = parser.parse_args()
    figures = measure(options.tasks, options.rounds, options.poll_interval, say=lambda m: print(m, file=sys.stderr))
    print(f"# azure backend on Azurite + the Batch emulator, {time.strftime('%Y-%m-%d')}")
    for line in report(figures):
        print(line)


if __name__ == "__main__":
    main()
