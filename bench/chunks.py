"""Chunks of iterations (issue 16, --chunk N|auto): B1–B5, measured in one run.

The azure figures run the real controller (`controller.py --backend azure`,
a fresh process per run) against Azurite and the Batch emulator started here,
the emulator running each task on this host with worker.py, as `--emulate`
does when no Docker engine answers (the kit then chunks: with --task-command
it would treat worker.py as another worker, one iteration per task). The
emulator models a task's fixed cost with --task-overhead; the pool is fixed
(--fixed-pool), its nodes ready in 0.05 s, and the controller polls every
POLL seconds, --emulate's default.

  B1  2,000 iterations of 20 ms (time.sleep: slots do not compete for the
      cores), 1 node x 4 slots, 1 s fixed cost per task: efficiency =
      (iterations x 20 ms / 4 slots) / wall, over two spans: the controller
      process (start to exit: staging, pool, job and the preparation task
      included, which chunking cannot change), and the span chunking
      controls, from the earliest Batch task's start (executionInfo.startTime)
      to the last result home (the newest result file's mtime in the run
      folder); --chunk auto and --chunk 1 (the latter on B1_ONE_COUNT
      iterations: 2,000 tasks of 1 s each would take ~9 minutes alone),
      rounds in ABBA order.
  B2  iterations of 2 s, the same pool and fixed cost: wall time of --chunk
      auto over --chunk 1 over the same two spans, ABBA rounds, on B2_COUNT
      iterations (2,000 would take ~17 minutes per run).
  B3  the local backend, 2,000 trivial iterations: wall / joblib.Parallel
      (bench/local.py's comparison), ABBA rounds.
  B4  2,000 iterations on 2 nodes x 2 slots: GETs of the run's config blob
      counted by a proxy in front of Azurite (tests/support/proxy.py), next to
      the number of nodes.
  B5  100,000 trivial iterations, 1 node x 4 slots, no modelled cost: the
      controller's peak RSS (its own ru_maxrss, written as it exits; its
      report subprocess apart) and Batch requests per iteration (the
      emulator's own request counters), run to the end (B5_DEADLINE).

    python -m bench chunks [--rounds 2]      (or python -m bench.chunks)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench import local
from bench.chunkfiles import home_times, inside_chunks, last_home
from bench.stats import Spread, order, ratios
from tests.kit import Kit
from tests.support.proxy import start_proxy
from tests.support.servers import AZURITE_ACCOUNT, kit_environment, start_azurite, start_batch_emulator

POLL = 0.5  # --emulate's poll interval (superbatch/emulate.py)
OVERHEAD = 1.0  # modelled fixed cost per task, seconds
SLOTS = 4
B1_COUNT, B1_SECONDS, B1_ONE_COUNT = 2000, 0.020, 100
B2_COUNT, B2_SECONDS = 40, 2.0
B3_COUNT = 2000
B4_COUNT, B4_NODES = 2000, 2
B5_COUNT = 100_000
B5_POLL = 5.0  # the kit's default --poll-interval: requests per iteration as on the service
B5_DEADLINE = 900.0  # seconds; past it the run is stopped and what it had done is reported

TASK = """
    import time

    def global_config():
        return {{"seconds": {seconds!r}}}

    def parameters():
        return list(range({count}))

    def task(config, i):
        if config["seconds"]:
            time.sleep(config["seconds"])
        return i

    def aggregate(results):
        return sum(results)
"""

# A fresh parent per controller run. The controller writes its own peak RSS
# as it exits (<rss_file>.self: RUSAGE_SELF, its report subprocess apart);
# the parent writes RUSAGE_CHILDREN, the largest process of the tree (the
# report subprocess drawing every iteration may be it). The controller runs
# with tasks_on_host, as --emulate sets it when no Docker engine answers:
# tasks run worker.py on this host, in chunks.
LAUNCH = r"""
import resource, subprocess, sys
rss_file, kit = sys.argv[1:3]
code = subprocess.call([sys.executable, "-c", '''
import resource, sys
sys.path.insert(0, sys.argv[1])
from superbatch import cli
build = cli.build_parser
def build_parser():
    parser = build()
    parser.set_defaults(tasks_on_host=True)
    return parser
cli.build_parser = build_parser
code = cli.main(sys.argv[3:])
with open(sys.argv[2], "w") as out:
    out.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))  # KiB on Linux
sys.exit(code)
''', kit, rss_file + ".self", *sys.argv[3:]])
with open(rss_file, "w") as out:
    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


@dataclass
class Run:
    count: int
    chunk: str
    wall: float  # the controller's, start to exit
    rss_mb: float  # the largest process of the controller's tree (ru_maxrss)
    requests: int  # Batch requests the emulator served
    by_operation: dict
    summary: dict
    tasks: list  # (id, start, end) seconds since the controller started, per Batch task
    prep: list  # (node, start, end) of the job preparation task on each node
    config_gets: int = 0
    stderr: list = field(default_factory=list)
    inside: dict = field(default_factory=dict)  # inside_chunks(): between, before and after the iterations
    last_home: float | None = None  # seconds since the controller started: the newest result file's mtime
    homes: list = field(default_factory=list)  # the 10th, 50th and 90th percentiles of the results' mtimes, likewise
    rss_self_mb: float | None = None  # the controller process's own peak

    @property
    def first_start(self) -> float:
        """Seconds since the controller started: the earliest Batch task's executionInfo.startTime."""
        return min(t[1] for t in self.tasks)

    @property
    def span(self) -> float:
        """What chunking controls: the earliest task's start to the last result home."""
        return self.last_home - self.first_start

    @property
    def timeline(self) -> str:
        """When the slots worked: the first wave, the gap before the rest, the rest."""
        if not self.tasks:
            return "no tasks listed"
        ordered = sorted(self.tasks, key=lambda t: int(t[0].rsplit("-c", 1)[-1]) if "-c" in t[0] else 0)
        first = [t for t in ordered[:SLOTS]]
        rest = ordered[SLOTS:]
        prep = f"prep {min(p[1] for p in self.prep):.2f}–{max(p[2] for p in self.prep):.2f} s, " if self.prep else ""
        text = f"{prep}{len(self.tasks)} tasks, first started {min(t[1] for t in self.tasks):.2f} s"
        if self.chunk == "auto" and rest:
            text += (f", first wave ({len(first)} tasks of 1 iteration) ended {min(t[2] for t in first):.2f}–{max(t[2] for t in first):.2f} s, "
                     f"the rest ({len(rest)} chunks) started {min(t[1] for t in rest):.2f} s, ended {max(t[2] for t in rest):.2f} s")
        else:
            text += f", last ended {max(t[2] for t in self.tasks):.2f} s"
        return text + (f", results home 10%/50%/90%/last at {'/'.join(f'{h:.2f}' for h in self.homes)}/{self.last_home:.2f} s, "
                       f"controller exited {self.wall:.2f} s")


@contextmanager
def servers(overhead: float, proxy: bool = False):
    """Azurite (with a counting proxy in front when asked) and a Batch emulator running tasks on this host."""
    with start_azurite() as azurite:
        emulator = start_batch_emulator(docker="off", task_overhead=overhead, autoscale_interval=3.0)
        blobs = start_proxy(f"http://{azurite.host}:{azurite.port}") if proxy else None
        try:
            blob_endpoint = f"{blobs.url}/{AZURITE_ACCOUNT}" if blobs else azurite.blob_endpoint
            yield emulator, blobs, kit_environment(emulator.account, emulator.key, emulator.endpoint, blob_endpoint)
        finally:
            if blobs:
                blobs.stop()
            emulator.stop()


def azure_run(kit: Kit, env: dict, emulator, run: str, count: int, seconds: float, chunk: str,
              nodes: int = 1, slots: int = SLOTS, blobs=None, timeout: float = 1800) -> Run:
    """One controller run of `count` iterations of `seconds` each; checks the aggregate against the plain loop's."""
    kit.write_task(TASK.format(seconds=seconds, count=count))
    summary_path, rss_path = kit.path / f"{run}.summary.json", kit.path / f"{run}.rss"
    argv = ["--backend", "azure", "--run", run, "--quiet", "--summary-json", summary_path, "--poll-interval", POLL,
            "--chunk", chunk, "--fixed-pool", "--dedicated-nodes", nodes, "--task-slots", slots]
    emulator.reset_stats()
    started = time.time()
    done = subprocess.run([sys.executable, "-c", LAUNCH, str(rss_path), str(kit.path), *map(str, argv)], cwd=kit.path,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout)
    wall = time.time() - started
    stats = emulator.stats()["requests"]  # before our own listing below
    if done.returncode != 0:
        raise RuntimeError(f"{run}: controller exited with {done.returncode}: {done.stderr[-2000:]}")
    expected = str(sum(range(count)))  # the plain loop's aggregate of this task.py
    if done.stdout.strip().splitlines()[-1] != expected:
        raise RuntimeError(f"{run}: aggregate {done.stdout.strip().splitlines()[-1]!r}, expected {expected}")
    client = emulator.client()
    job = f"superbatch-{run}"
    tasks = [(t.id, t.execution_info.start_time.timestamp() - started, t.execution_info.end_time.timestamp() - started)
             for t in client.list_tasks(job, select=["id", "executionInfo"])]
    prep = [(p.node_id, p.job_preparation_task_execution_info.start_time.timestamp() - started,
             p.job_preparation_task_execution_info.end_time.timestamp() - started)
            for p in client.list_job_preparation_and_release_task_status(job)
            if p.job_preparation_task_execution_info and p.job_preparation_task_execution_info.end_time]
    gets = 0
    if blobs is not None:
        gets = sum(n for path, n in blobs.arrived("GET").items() if path.endswith(f"/{run}/config.pickle"))
    return Run(count, chunk, wall, int(rss_path.read_text()) / 1024, stats["total"],
               {op: sum(by.values()) for op, by in stats["byOperation"].items()}, json.loads(summary_path.read_text()),
               tasks, prep, gets, done.stderr.splitlines(), inside=inside_chunks(env, run, tasks, started),
               last_home=last_home(kit, run) - started, rss_self_mb=int(Path(f"{rss_path}.self").read_text()) / 1024,
               homes=[home_times(kit, run)[int(q * count / 10)] - started for q in (1, 5, 9)])


def big_run(kit: Kit, env: dict, emulator, count: int, say, deadline: float = B5_DEADLINE) -> dict:
    """B5: one run of `count` trivial iterations, stopped at the deadline if
    not done. The controller's RSS is sampled every second (psutil), its
    progress lines timestamped; at the end (or the deadline): Batch requests
    by operation, results the workers had sent (the positions their parts
    cover), results home, the controller's phases (its summary)."""
    import psutil
    from azure.storage.blob import ContainerClient

    run = "b5"
    kit.write_task(TASK.format(seconds=0.0, count=count))
    rss_path = kit.path / f"{run}.rss"
    argv = ["--backend", "azure", "--run", run, "--summary-json", kit.path / f"{run}.summary.json", "--poll-interval", B5_POLL,
            "--chunk", "auto", "--fixed-pool", "--dedicated-nodes", 1, "--task-slots", SLOTS]
    emulator.reset_stats()
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, str(rss_path), str(kit.path), *map(str, argv)], cwd=kit.path,
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list = []  # (seconds since start, line)
    threading.Thread(target=lambda: lines.extend((time.time() - started, line.rstrip()) for line in proc.stderr), daemon=True).start()
    out: list = []
    threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True).start()
    peak, timeline = 0.0, []  # timeline: (seconds, RSS MB, results home) every 10 s
    launcher = psutil.Process(proc.pid)
    while proc.poll() is None and time.time() - started < deadline:
        try:
            rss = max([0.0] + [child.memory_info().rss / 2**20 for child in launcher.children()])  # the controller alone
            peak = max(peak, rss)
            if not timeline or time.time() - started >= timeline[-1][0] + 10:
                timeline.append((round(time.time() - started), round(rss), len(list((kit.path / "runs" / run).glob("task_*_output.pickle")))))
        except (psutil.Error, OSError):
            pass
        time.sleep(1.0)
    finished = proc.poll() is not None
    wall = time.time() - started
    tasks = [(t.execution_info.start_time.timestamp() - started, t.execution_info.end_time.timestamp() - started)
             for t in emulator.client().list_tasks(f"superbatch-{run}", select=["id", "executionInfo"])
             if t.execution_info and t.execution_info.start_time and t.execution_info.end_time]
    stats = emulator.stats()["requests"]
    requests = stats["total"]
    by_operation = {op: sum(by.values()) for op, by in stats["byOperation"].items()}
    container = ContainerClient.from_connection_string(env["STORAGE_ACCOUNT_CONNECTION_STRING"], f"superbatch-{run}")
    uploaded = parts = 0
    for blob in container.list_blobs(name_starts_with=f"{run}/chunks/"):
        name = blob.name.rsplit("/", 1)[-1]
        if name.startswith("part-") and name.endswith(".zip"):  # part-<first>-<end>.zip: positions first..end-1
            first, end = name[len("part-"):-len(".zip")].split("-")
            uploaded += int(end) - int(first)
            parts += 1
    home = sum(1 for _ in (kit.path / "runs" / run).glob("task_*_output.pickle"))
    last = last_home(kit, run) - started if home else None
    if not finished:
        for child in launcher.children(recursive=True):  # the controller; its tasks stop with the emulator
            child.terminate()
        proc.wait(timeout=60)
    def when(text):
        return next((f"{t:.1f} s" for t, line in lines if text in line), "not reached")
    summary_path = kit.path / f"{run}.summary.json"
    self_path = Path(f"{rss_path}.self")
    result = {"count": count, "finished": finished and proc.returncode == 0, "wall": wall, "requests": requests,
              "by_operation": by_operation, "uploaded": uploaded, "parts": parts, "home": home, "last_home": last,
              "peak_sampled_mb": peak,
              "ru_maxrss_mb": int(rss_path.read_text()) / 1024 if rss_path.exists() else None,  # the tree's largest process
              "controller_rss_mb": int(self_path.read_text()) / 1024 if self_path.exists() else None,
              "phases": json.loads(summary_path.read_text())["phases"] if summary_path.exists() else None,
              "tasks": len(tasks), "tasks_started": min((t[0] for t in tasks), default=None),
              "tasks_ended": max((t[1] for t in tasks), default=None), "rss_timeline": timeline,
              "staged": when("uploading"), "first_wave": when("iterations) to job"), "rest_added": when("chunks of "),
              "aggregate": out[-1].strip() if out else None}
    if result["finished"] and result["aggregate"] != str(sum(range(count))):
        raise RuntimeError(f"B5 aggregate {result['aggregate']!r}, expected {sum(range(count))}")
    say(f"  {'done' if result['finished'] else 'stopped'} at {wall:.0f} s: {json.dumps(result)}")
    return result


def efficiency(run: Run, seconds: float, slots: int = SLOTS) -> float:
    """Over the controller process, start to exit."""
    return run.count * seconds / slots / run.wall


def span_efficiency(run: Run, seconds: float, slots: int = SLOTS) -> float:
    """Over what chunking controls: the earliest Batch task's start to the last result home."""
    return run.count * seconds / slots / run.span


def judged(spread: Spread, ok) -> object:
    """yes when every round meets the goal, "median only" when the median does, else no."""
    return True if all(ok(v) for v in spread.values) else ("median only" if ok(spread.median) else False)


@dataclass
class Figures:
    b1_auto: list
    b1_one: list
    b2_auto: list
    b2_one: list
    b3: object
    b4: Run
    b5: dict
    rounds: int
    b3_breakdown: dict = field(default_factory=dict)
    load_at_start: str = ""

    @property
    def b1_auto_eff(self) -> Spread:
        return Spread([efficiency(r, B1_SECONDS) for r in self.b1_auto])

    @property
    def b1_auto_span_eff(self) -> Spread:
        return Spread([span_efficiency(r, B1_SECONDS) for r in self.b1_auto])

    @property
    def b1_one_eff(self) -> Spread:
        return Spread([efficiency(r, B1_SECONDS) for r in self.b1_one])

    @property
    def b1_one_span_eff(self) -> Spread:
        return Spread([span_efficiency(r, B1_SECONDS) for r in self.b1_one])

    @property
    def b2_ratio(self) -> Spread:
        return ratios([r.wall for r in self.b2_auto], [r.wall for r in self.b2_one])

    @property
    def b2_span_ratio(self) -> Spread:
        return ratios([r.span for r in self.b2_auto], [r.span for r in self.b2_one])


def measure(rounds: int = 2, say=print) -> Figures:
    load_at_start = load()
    say(f"load average at the start: {load_at_start}")
    with tempfile.TemporaryDirectory(prefix="bench-chunks-") as folder:
        kit = Kit(Path(folder))
        b1 = {"auto": [], "1": []}
        b2 = {"auto": [], "1": []}
        with servers(OVERHEAD) as (emulator, _, env):
            for round_ in range(rounds):
                for chunk in order(("auto", "1"), round_):
                    count = B1_COUNT if chunk == "auto" else B1_ONE_COUNT
                    say(f"B1 round {round_ + 1}: {count} iterations of {B1_SECONDS * 1000:g} ms, --chunk {chunk} ...")
                    run = azure_run(kit, env, emulator, f"b1-{chunk}-{round_}", count, B1_SECONDS, chunk)
                    b1[chunk].append(run)
                    say(f"  efficiency {efficiency(run, B1_SECONDS):.2f} over the controller's {run.wall:.1f} s, "
                        f"{span_efficiency(run, B1_SECONDS):.2f} over first task start → last result home ({run.span:.1f} s); {run.timeline}")
            for round_ in range(rounds):
                for chunk in order(("auto", "1"), round_):
                    say(f"B2 round {round_ + 1}: {B2_COUNT} iterations of {B2_SECONDS:g} s, --chunk {chunk} ...")
                    run = azure_run(kit, env, emulator, f"b2-{chunk}-{round_}", B2_COUNT, B2_SECONDS, chunk)
                    b2[chunk].append(run)
                    say(f"  controller {run.wall:.1f} s, first task start → last result home {run.span:.1f} s; {run.timeline}")
        say(f"B4: {B4_COUNT} trivial iterations on {B4_NODES} nodes x 2 slots, config GETs counted ...")
        with servers(OVERHEAD, proxy=True) as (emulator, blobs, env):
            b4 = azure_run(kit, env, emulator, "b4", B4_COUNT, 0.0, "auto", nodes=B4_NODES, slots=2, blobs=blobs)
        say(f"  {b4.config_gets} GETs of the config blob, {len(b4.prep)} nodes ran the preparation task; {b4.timeline}")
        say(f"B5: {B5_COUNT:,} trivial iterations, 1 node x {SLOTS} slots, poll {B5_POLL:g} s, stopped after {B5_DEADLINE:g} s if not done ...")
        with servers(0.0) as (emulator, _, env):
            b5 = big_run(kit, env, emulator, B5_COUNT, say)
    say(f"B3: local backend vs joblib.Parallel, {B3_COUNT} trivial iterations, {max(rounds, 4)} ABBA rounds ...")
    b3 = local.compare(f"B3 {B3_COUNT} trivial iterations", B3_COUNT, 0, max(rounds, 4))
    breakdown = local.breakdown(B3_COUNT)
    say(f"  one more local run, seconds by phase: {json.dumps({k: round(v, 3) for k, v in breakdown.items()})}")
    return Figures(b1["auto"], b1["1"], b2["auto"], b2["1"], b3, b4, b5, rounds, breakdown, load_at_start)


def load() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def rows(f: Figures, row) -> list:
    """The README's "Chunks (issue 16)" rows: (figure, measured, goal, met)."""
    b3, b5 = f.b3.ratio, f.b5
    b5_note = "" if b5["finished"] else f" — **not finished** in {B5_DEADLINE:g} s: {b5['uploaded']:,} of {b5['count']:,} results sent by the workers, {b5['home']:,} home"
    per_iteration = b5["requests"] / max(1, b5["uploaded"] if not b5["finished"] else b5["count"])
    rss = b5["controller_rss_mb"] if b5["finished"] and b5["controller_rss_mb"] else b5["peak_sampled_mb"]
    at_least = lambda goal: (lambda v: v >= goal)  # noqa: E731
    at_most = lambda goal: (lambda v: v <= goal)  # noqa: E731
    return [
        row(f"B1 efficiency, --chunk auto, {B1_COUNT:,} × {B1_SECONDS * 1000:g} ms, {SLOTS} slots, {OVERHEAD:g} s per task: "
            f"first task start → last result home", f.b1_auto_span_eff.text(), "≥ 0.8", judged(f.b1_auto_span_eff, at_least(0.8))),
        row("B1 efficiency, --chunk auto: the controller process, start to exit (staging, pool, job, preparation task included)",
            f.b1_auto_eff.text(), "—", None),
        row(f"B1 efficiency, --chunk 1 ({B1_ONE_COUNT} iterations: {B1_COUNT:,} tasks of {OVERHEAD:g} s would take ~9 min): "
            f"first task start → last result home / controller process", f"{f.b1_one_span_eff.text()} / {f.b1_one_eff.text()}", "—", None),
        row(f"B2 wall time, --chunk auto / --chunk 1, {B2_COUNT} × {B2_SECONDS:g} s: first task start → last result home",
            f.b2_span_ratio.text(), "≤ 1.10", judged(f.b2_span_ratio, at_most(1.10))),
        row("B2 wall time, --chunk auto / --chunk 1: the controller process", f.b2_ratio.text(), "≤ 1.10", judged(f.b2_ratio, at_most(1.10))),
        row(f"B3 local backend / joblib.Parallel, {B3_COUNT:,} trivial iterations (wall time)", b3.text(), "≤ 2", judged(b3, at_most(2))),
        row(f"B4 GETs of the config blob, {B4_COUNT:,} iterations, {B4_NODES} nodes", f"{f.b4.config_gets} GETs, {B4_NODES} nodes", "= nodes",
            f.b4.config_gets == B4_NODES),
        row(f"B5 controller peak RSS, {b5['count']:,} trivial iterations", f"{rss:.0f} MB{b5_note}", "≤ 150 MB",
            rss <= 150 if b5["finished"] else "not judged"),
        row(f"B5 Batch requests per iteration, poll {B5_POLL:g} s", f"{per_iteration:.4f} ({b5['requests']} requests)", "≤ 0.001",
            per_iteration <= 0.001 if b5["finished"] else "not judged"),
    ]


def notes(f: Figures) -> list:
    b1, b2, b5, b3 = f.b1_auto[0], f.b2_auto[0], f.b5, f.b3_breakdown
    before = b1.first_start
    prep = (f"preparation task {min(p[1] for p in b1.prep):.1f}–{max(p[2] for p in b1.prep):.1f} s; " if b1.prep else "")
    b5_phases = ", ".join(f"{k} {v:.1f} s" for k, v in (b5.get("phases") or {}).items())
    return [
        f"- Load average at the start: {f.load_at_start}.",
        f"- B1/B2: the real controller against Azurite and the Batch emulator (tasks on this host with worker.py, "
        f"--task-overhead {OVERHEAD:g}, 1 fixed node × {SLOTS} slots, poll {POLL:g} s as under --emulate); {f.rounds} rounds in ABBA order. "
        f"Controller seconds per round (start to exit): B1 auto {'/'.join(f'{r.wall:.1f}' for r in f.b1_auto)}, "
        f"chunk 1 {'/'.join(f'{r.wall:.1f}' for r in f.b1_one)}; B2 auto {'/'.join(f'{r.wall:.1f}' for r in f.b2_auto)}, "
        f"chunk 1 {'/'.join(f'{r.wall:.1f}' for r in f.b2_one)}. First task start → last result home (the newest result file's mtime): "
        f"B1 auto {'/'.join(f'{r.span:.1f}' for r in f.b1_auto)}, chunk 1 {'/'.join(f'{r.span:.1f}' for r in f.b1_one)}; "
        f"B2 auto {'/'.join(f'{r.span:.1f}' for r in f.b2_auto)}, chunk 1 {'/'.join(f'{r.span:.1f}' for r in f.b2_one)}.",
        f"- B1 auto, round 1, seconds from the controller's start: {b1.timeline}. Before the first task starts ({before:.1f} s: "
        f"staging, pool, job, {prep}none of it chunking's) and after the last result is home "
        f"({b1.wall - b1.last_home:.1f} s: the aggregate, the summary, the run report) the controller's wall is not chunking's."
        + (f" Inside a chunk task (means, from the chunks' status.json): {b1.inside['before']:.2f} s from the task's start to its first "
           f"iteration (the {OVERHEAD:g} s modelled cost, Python and worker.py starting), {b1.inside['between'] * 1000:.1f} ms between one "
           f"iteration's end and the next one's start (worker.py's own work, parts sent each second) against {B1_SECONDS * 1000:g} ms of "
           f"work, {b1.inside['after']:.2f} s from the last iteration to the task's end." if b1.inside.get("between") is not None else ""),
        f"- B2 auto, round 1: {b2.timeline}.",
        f"- B3: bench/local.py's comparison (fresh processes, ABBA), seconds per round: kit {f.b3.kit.rounds()}, joblib {f.b3.joblib.rounds()}. "
        + (f"One more local run, seconds: total {b3['total']:.2f} = import {b3['import']:.2f} + load/stage {b3.get('load', 0) + b3.get('stage', 0):.2f} "
           f"+ run {b3.get('run', 0):.2f} (pool start to the first iteration {b3['pool_start']:.2f}, iterations first start → last end "
           f"{b3['iterations_span']:.2f}, summed spans {b3['iterations_sum']:.2f}, then {b3['after_iterations']:.2f}) "
           f"+ aggregate {b3.get('aggregate', 0):.2f} + run report {b3['report']:.2f} (flow._report: report.html drawn in a subprocess) "
           f"+ the rest {b3['rest']:.2f} (arguments, the summary JSON)." if b3 else ""),
        f"- B4: a counting proxy (tests/support/proxy.py) in front of Azurite; GETs of <run>/config.pickle; "
        f"{len(f.b4.prep)} nodes ran the job preparation task; {f.b4.timeline}.",
        f"- B5: 1 node × {SLOTS} slots, no modelled cost, poll {B5_POLL:g} s (the kit's default); {'done' if b5['finished'] else 'stopped'} "
        f"at {b5['wall']:.0f} s; the controller's own peak RSS (ru_maxrss as it exits) {b5['controller_rss_mb'] or 0:.0f} MB, sampled every second "
        f"{b5['peak_sampled_mb']:.0f} MB, the largest process of its tree (the run report's subprocess included) {b5['ru_maxrss_mb'] or 0:.0f} MB; "
        f"seconds from start: inputs staged (upload began) {b5['staged']}, first wave added {b5['first_wave']}, the rest sized and added "
        f"{b5['rest_added']}, {b5['tasks']} Batch tasks ran {b5['tasks_started'] or 0:.0f}–{b5['tasks_ended'] or 0:.0f} s, "
        f"last result home {b5['last_home'] or 0:.0f} s; controller phases: {b5_phases or 'none written'}; "
        f"the controller's RSS (s, MB, results home): {' '.join(f'{t}/{m}/{h}' for t, m, h in b5['rss_timeline'])}; "
        f"{b5['uploaded']:,} results sent by the workers in {b5['parts']:,} parts, {b5['home']:,} home; {b5['requests']} Batch requests "
        f"({', '.join(f'{op} {n}' for op, n in sorted(b5['by_operation'].items(), key=lambda kv: -kv[1]))}).",
    ]


def table(f: Figures) -> str:
    def row(figure, value, goal, met):
        shown = "—" if met is None else (met if isinstance(met, str) else ("yes" if met else "**no**"))
        return f"| {figure} | {value} | {goal} | {shown} |"
    return "\n".join(["| figure | measured | goal | met |", "|---|---|---|---|", *rows(f, row), "", *notes(f)])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench chunks", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds of B1 and B2 (default: %(default)s)")
    options = parser.parse_args(argv)
    started = time.time()
    figures = measure(options.rounds, say=lambda m: print(f"[chunks] {m}", file=sys.stderr, flush=True))
    text = (f"# Chunks (issue 16)\n\n- date: {time.strftime('%Y-%m-%d %H:%M %Z')}; `python -m bench chunks` took "
            f"{(time.time() - started) / 60:.1f} min; load average at the start {figures.load_at_start}, at the end {load()}\n\n"
            f"{table(figures)}\n")
    print(text)
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    (results / "chunks.md").write_text(text)


if __name__ == "__main__":
    main()
