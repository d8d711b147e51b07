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
      (iterations x 20 ms / 4 slots) / the controller's wall time, --chunk auto
      and --chunk 1 (the latter on B1_ONE_COUNT iterations: 2,000 tasks of
      1 s each would take ~9 minutes alone), rounds in ABBA order.
  B2  iterations of 2 s, the same pool and fixed cost: wall time of --chunk
      auto over --chunk 1, ABBA rounds, on B2_COUNT iterations (2,000 would
      take ~17 minutes per run).
  B3  the local backend, 2,000 trivial iterations: wall / joblib.Parallel
      (bench/local.py's comparison), ABBA rounds.
  B4  2,000 iterations on 2 nodes x 2 slots: GETs of the run's config blob
      counted by a proxy in front of Azurite (tests/support/proxy.py), next to
      the number of nodes.
  B5  100,000 trivial iterations, 1 node x 4 slots, no modelled cost: the
      controller's peak RSS (ru_maxrss of a fresh parent's only child) and
      Batch requests per iteration (the emulator's own request counters).

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
B5_DEADLINE = 240.0  # seconds; past it the run is stopped and what it had done is reported

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

# A fresh parent per controller run: RUSAGE_CHILDREN is then that controller's
# peak RSS. The controller runs with tasks_on_host, as --emulate sets it when
# no Docker engine answers: tasks run worker.py on this host, in chunks.
LAUNCH = r"""
import resource, subprocess, sys
rss_file, kit = sys.argv[1:3]
code = subprocess.call([sys.executable, "-c", '''
import sys
sys.path.insert(0, sys.argv[1])
from superbatch import cli
build = cli.build_parser
def build_parser():
    parser = build()
    parser.set_defaults(tasks_on_host=True)
    return parser
cli.build_parser = build_parser
sys.exit(cli.main(sys.argv[2:]))
''', kit, *sys.argv[3:]])
with open(rss_file, "w") as out:
    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))  # KiB on Linux
sys.exit(code)
"""


@dataclass
class Run:
    count: int
    chunk: str
    wall: float  # the controller's, start to exit
    rss_mb: float
    requests: int  # Batch requests the emulator served
    by_operation: dict
    summary: dict
    tasks: list  # (id, start, end) seconds since the controller started, per Batch task
    prep: list  # (node, start, end) of the job preparation task on each node
    config_gets: int = 0
    stderr: list = field(default_factory=list)
    between: float | None = None  # seconds between iterations in a chunk (the result's upload)

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
        return text + f", controller exited {self.wall:.2f} s"


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
               tasks, prep, gets, done.stderr.splitlines(), between_iterations(env, run, tasks))


def between_iterations(env: dict, run: str, tasks: list) -> float | None:
    """Mean seconds a chunk of many iterations spent between one iteration's
    end and the next one's start (worker.py uploading each result), from the
    chunks' status.json."""
    from azure.storage.blob import ContainerClient

    container = ContainerClient.from_connection_string(env["STORAGE_ACCOUNT_CONNECTION_STRING"], f"superbatch-{run}")
    gaps = []
    for task_id, _, _ in tasks:
        try:
            data = container.download_blob(f"{run}/chunks/{task_id}/status.json").readall()
        except Exception:  # not a chunk task
            continue
        spans = sorted((e["start"], e["end"]) for e in json.loads(data)["iterations"].values() if "start" in e)
        gaps += [b[0] - a[1] for a, b in zip(spans, spans[1:])]
    container.delete_container()
    return sum(gaps) / len(gaps) if gaps else None


def big_run(kit: Kit, env: dict, emulator, count: int, say, deadline: float = B5_DEADLINE) -> dict:
    """B5: one run of `count` trivial iterations, stopped at the deadline if
    not done. The controller's RSS is sampled every second (psutil), its
    progress lines timestamped; at the end (or the deadline): Batch requests,
    results the workers had uploaded, results home."""
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
    peak = 0.0
    launcher = psutil.Process(proc.pid)
    while proc.poll() is None and time.time() - started < deadline:
        try:
            peak = max([peak] + [child.memory_info().rss / 2**20 for child in launcher.children(recursive=True)])
        except psutil.Error:
            pass
        time.sleep(1.0)
    finished = proc.poll() is not None
    wall = time.time() - started
    requests = emulator.stats()["requests"]["total"]
    container = ContainerClient.from_connection_string(env["STORAGE_ACCOUNT_CONNECTION_STRING"], f"superbatch-{run}")
    uploaded = sum(1 for blob in container.list_blobs(name_starts_with=f"{run}/chunks/") if "_output." in blob.name)
    home = sum(1 for _ in (kit.path / "runs" / run).glob("task_*_output.pickle"))
    if not finished:
        for child in launcher.children(recursive=True):  # the controller; its tasks stop with the emulator
            child.terminate()
        proc.wait(timeout=60)
    def when(text):
        return next((f"{t:.1f} s" for t, line in lines if text in line), "not reached")
    result = {"count": count, "finished": finished and proc.returncode == 0, "wall": wall, "requests": requests,
              "uploaded": uploaded, "home": home, "peak_sampled_mb": peak,
              "ru_maxrss_mb": int(rss_path.read_text()) / 1024 if rss_path.exists() else None,
              "staged": when("uploading"), "first_wave": when("iterations) to job"), "rest_added": when("chunks of "),
              "aggregate": out[-1].strip() if out else None}
    if result["finished"] and result["aggregate"] != str(sum(range(count))):
        raise RuntimeError(f"B5 aggregate {result['aggregate']!r}, expected {sum(range(count))}")
    say(f"  {'done' if result['finished'] else 'stopped'} at {wall:.0f} s: {json.dumps(result)}")
    return result


def efficiency(run: Run, seconds: float, slots: int = SLOTS) -> float:
    return run.count * seconds / slots / run.wall


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

    @property
    def b1_auto_eff(self) -> Spread:
        return Spread([efficiency(r, B1_SECONDS) for r in self.b1_auto])

    @property
    def b1_one_eff(self) -> Spread:
        return Spread([efficiency(r, B1_SECONDS) for r in self.b1_one])

    @property
    def b2_ratio(self) -> Spread:
        return ratios([r.wall for r in self.b2_auto], [r.wall for r in self.b2_one])


def measure(rounds: int = 2, say=print) -> Figures:
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
                    say(f"  {run.wall:.1f} s, efficiency {efficiency(run, B1_SECONDS):.2f}; {run.timeline}")
            for round_ in range(rounds):
                for chunk in order(("auto", "1"), round_):
                    say(f"B2 round {round_ + 1}: {B2_COUNT} iterations of {B2_SECONDS:g} s, --chunk {chunk} ...")
                    run = azure_run(kit, env, emulator, f"b2-{chunk}-{round_}", B2_COUNT, B2_SECONDS, chunk)
                    b2[chunk].append(run)
                    say(f"  {run.wall:.1f} s; {run.timeline}")
        say(f"B4: {B4_COUNT} trivial iterations on {B4_NODES} nodes x 2 slots, config GETs counted ...")
        with servers(OVERHEAD, proxy=True) as (emulator, blobs, env):
            b4 = azure_run(kit, env, emulator, "b4", B4_COUNT, 0.0, "auto", nodes=B4_NODES, slots=2, blobs=blobs)
        say(f"  {b4.config_gets} GETs of the config blob, {len(b4.prep)} nodes ran the preparation task; {b4.timeline}")
        say(f"B5: {B5_COUNT:,} trivial iterations, 1 node x {SLOTS} slots, poll {B5_POLL:g} s, stopped after {B5_DEADLINE:g} s if not done ...")
        with servers(0.0) as (emulator, _, env):
            b5 = big_run(kit, env, emulator, B5_COUNT, say)
    say(f"B3: local backend vs joblib.Parallel, {B3_COUNT} trivial iterations, {max(rounds, 4)} ABBA rounds ...")
    b3 = local.compare(f"B3 {B3_COUNT} trivial iterations", B3_COUNT, 0, max(rounds, 4))
    return Figures(b1["auto"], b1["1"], b2["auto"], b2["1"], b3, b4, b5, rounds)


def rows(f: Figures, row) -> list:
    """The README's "Chunks (issue 16)" rows: (figure, measured, goal, met)."""
    auto, one = f.b1_auto_eff, f.b1_one_eff
    b3 = f.b3.ratio
    b5 = f.b5
    b5_note = "" if b5["finished"] else f" — **not finished** in {B5_DEADLINE:g} s: {b5['uploaded']:,} of {b5['count']:,} results uploaded by the workers, {b5['home']:,} home"
    per_iteration = b5["requests"] / max(1, b5["uploaded"] if not b5["finished"] else b5["count"])
    rss = b5["ru_maxrss_mb"] if b5["finished"] and b5["ru_maxrss_mb"] else b5["peak_sampled_mb"]
    return [
        row(f"B1 efficiency, --chunk auto, {B1_COUNT:,} × {B1_SECONDS * 1000:g} ms, {SLOTS} slots, {OVERHEAD:g} s per task",
            auto.text(), "≥ 0.8", auto.median >= 0.8 if all(v >= 0.8 for v in auto.values) or auto.median < 0.8 else "median only"),
        row(f"B1 efficiency, --chunk 1 ({B1_ONE_COUNT} iterations: {B1_COUNT:,} tasks of {OVERHEAD:g} s would take ~9 min)", one.text(), "—", None),
        row(f"B2 wall time, --chunk auto / --chunk 1, {B2_COUNT} × {B2_SECONDS:g} s", f.b2_ratio.text(), "≤ 1.10",
            all(v <= 1.10 for v in f.b2_ratio.values) or ("median only" if f.b2_ratio.median <= 1.10 else False)),
        row(f"B3 local backend / joblib.Parallel, {B3_COUNT:,} trivial iterations (wall time)", b3.text(), "≤ 2",
            all(v <= 2 for v in b3.values) or ("median only" if b3.median <= 2 else False)),
        row(f"B4 GETs of the config blob, {B4_COUNT:,} iterations, {B4_NODES} nodes", f"{f.b4.config_gets} GETs, {B4_NODES} nodes", "= nodes",
            f.b4.config_gets == B4_NODES),
        row(f"B5 controller peak RSS, {b5['count']:,} trivial iterations", f"{rss:.0f} MB{b5_note}", "≤ 150 MB",
            rss <= 150 if b5["finished"] else "not judged"),
        row(f"B5 Batch requests per iteration, poll {B5_POLL:g} s", f"{per_iteration:.4f} ({b5['requests']} requests)", "≤ 0.001",
            per_iteration <= 0.001 if b5["finished"] else "not judged"),
    ]


def notes(f: Figures) -> list:
    b1, b2, b5 = f.b1_auto[0], f.b2_auto[0], f.b5
    tail = b1.wall - max(t[2] for t in b1.tasks)
    return [
        f"- B1/B2: the real controller against Azurite and the Batch emulator (tasks on this host with worker.py, "
        f"--task-overhead {OVERHEAD:g}, 1 fixed node × {SLOTS} slots, poll {POLL:g} s as under --emulate); wall = the controller process, "
        f"start to exit; {f.rounds} rounds in ABBA order. Seconds per round: B1 auto {'/'.join(f'{r.wall:.1f}' for r in f.b1_auto)}, "
        f"chunk 1 {'/'.join(f'{r.wall:.1f}' for r in f.b1_one)}; B2 auto {'/'.join(f'{r.wall:.1f}' for r in f.b2_auto)}, "
        f"chunk 1 {'/'.join(f'{r.wall:.1f}' for r in f.b2_one)}.",
        f"- B1 auto, round 1, seconds from the controller's start: {b1.timeline}. Inside a chunk, "
        f"{b1.between * 1000:.1f} ms pass between one iteration's end and the next one's start (worker.py uploading each result; "
        f"from the chunks' status.json) against {B1_SECONDS * 1000:g} ms of work; the last task's end → the controller's exit "
        f"(the results fetched one blob each, then the aggregate): {tail:.1f} s." if b1.between is not None else f"- B1 auto: {b1.timeline}",
        f"- B2 auto, round 1: {b2.timeline}.",
        f"- B3: bench/local.py's comparison (fresh processes, ABBA), seconds per round: kit {f.b3.kit.rounds()}, joblib {f.b3.joblib.rounds()}.",
        f"- B4: a counting proxy (tests/support/proxy.py) in front of Azurite; GETs of <run>/config.pickle; "
        f"{len(f.b4.prep)} nodes ran the job preparation task; {f.b4.timeline}.",
        f"- B5: 1 node × {SLOTS} slots, no modelled cost, poll {B5_POLL:g} s (the kit's default); RSS sampled every second (psutil) "
        f"and ru_maxrss when the run ends; {'done' if b5['finished'] else 'stopped'} at {b5['wall']:.0f} s; seconds from start: inputs staged "
        f"(upload began) {b5['staged']}, first wave added {b5['first_wave']}, the rest sized and added {b5['rest_added']}; "
        f"{b5['uploaded']:,} results uploaded by the workers, {b5['home']:,} home; {b5['requests']} Batch requests.",
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
            f"{(time.time() - started) / 60:.1f} min\n\n{table(figures)}\n")
    print(text)
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    (results / "chunks.md").write_text(text)


if __name__ == "__main__":
    main()
