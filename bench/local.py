"""The local backend against joblib.Parallel(n_jobs=-1) over the same tasks.

Both sides run in fresh Python processes (cold worker pools), timed from
inside, from reading task.py to the aggregate: for the kit that includes
staging every input to disk, a working directory per task and the outputs
collected from disk. Rounds run in ABBA order (kit first, then joblib
first, ...) so that the machine's noise hits both alike; each ratio is the
median of the rounds' ratios, with their min–max range.

    python -m bench.local [--rounds 5]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from bench.stats import Spread, order, ratios
from tests.kit import Kit

TASK = """
    def global_config():
        return {{"loops": {loops}}}

    def parameters():
        return list(range({count}))

    def task(config, seed):
        total = 0
        for i in range(config["loops"]):
            total += (i * seed) % 7
        return total

    def aggregate(results):
        return sum(results)
"""

JOBLIB = """
import sys, time
sys.path.insert(0, {kit!r})
started = time.perf_counter()
import joblib, task
config = task.global_config()
results = joblib.Parallel(n_jobs=-1)(joblib.delayed(task.task)(config, p) for p in task.parameters())
print(task.aggregate(results))
print(time.perf_counter() - started, file=sys.stderr)
"""

KIT = """
import sys, time
sys.path.insert(0, {kit!r})
started = time.perf_counter()
from superbatch.cli import main
code = main(["--run", {run!r}, "--quiet"])
print(time.perf_counter() - started, file=sys.stderr)
sys.exit(code)
"""


def loops_for(seconds: float) -> int:
    """How many loop turns of the task take `seconds` of CPU here."""
    namespace = {}
    exec(textwrap.dedent(TASK.format(loops=0, count=0)), namespace)
    loops = 100_000
    started = time.process_time()
    namespace["task"]({"loops": loops}, 3)
    return int(loops * seconds / (time.process_time() - started))


def timed(script: str) -> tuple[float, str]:
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return float(done.stderr.strip().splitlines()[-1]), done.stdout.strip().splitlines()[-1]


@dataclass
class Comparison:
    ratio: Spread  # kit / joblib, round by round
    kit: Spread  # seconds per round
    joblib: Spread


def compare(label: str, count: int, loops: int, rounds: int) -> Comparison:
    """Round-by-round ratios of the kit's wall time over joblib's on `count` tasks."""
    times: dict = {"kit": [], "joblib": []}
    with tempfile.TemporaryDirectory() as folder:
        kit = Kit(Path(folder))
        kit.write_task(TASK.format(loops=loops, count=count))
        reference = None
        for round_ in range(rounds):
            for side in order(("kit", "joblib"), round_):
                script = KIT.format(kit=folder, run=f"bench{round_}") if side == "kit" else JOBLIB.format(kit=folder)
                seconds, result = timed(script)
                times[side].append(seconds)
                reference = reference or result
                assert result == reference, (side, result, reference)
    result = Comparison(ratios(times["kit"], times["joblib"]), Spread(times["kit"]), Spread(times["joblib"]))
    print(f"{label:<42} kit {result.kit.text('.3f', ' s')}   joblib {result.joblib.text('.3f', ' s')}   ratio {result.ratio.text()}")
    return result


# One local run apart from the compared rounds, timed by phase: what the kit
# does that joblib.Parallel does not. The script wraps superbatch.flow's
# timed() and _report() to note when each phase began and ended (time.time(),
# the clock of the iterations' spans in the summary).
BREAKDOWN = """
import contextlib, json, sys, time
sys.path.insert(0, {kit!r})
began = time.time()
from superbatch import flow
from superbatch.cli import main
marks = {{"import": [(began, time.time())]}}
def noted(name, function):
    def wrapper(*args, **kwargs):
        started = time.time()
        try:
            return function(*args, **kwargs)
        finally:
            marks.setdefault(name, []).append((started, time.time()))
    return wrapper
timed = flow.timed
@contextlib.contextmanager
def marked(phases, name):
    started = time.time()
    with timed(phases, name):
        yield
    marks.setdefault(name, []).append((started, time.time()))
flow.timed = marked
flow._report = noted("report", flow._report)
code = main(["--run", {run!r}, "--quiet", "--summary-json", {summary!r}])
marks["total"] = [(began, time.time())]
print(json.dumps(marks), file=sys.stderr)
sys.exit(code)
"""


def breakdown(count: int) -> dict:
    """Seconds of one local run of `count` trivial iterations: the kit's
    import, each phase of flow.run_job (stage, run, aggregate), inside the
    run phase the pool's start (to the first iteration's start), the
    iterations (first start to last end; and the sum of their spans,
    worker.py's own work per iteration included) and what follows the last
    one; the run report (flow._report: facts closed, report.html drawn in a
    subprocess) and the rest (argument parsing, the summary JSON written)."""
    with tempfile.TemporaryDirectory(prefix="bench-b3-") as folder:
        kit = Kit(Path(folder))
        kit.write_task(TASK.format(loops=0, count=count))
        summary_path = Path(folder) / "summary.json"
        done = subprocess.run([sys.executable, "-c", BREAKDOWN.format(kit=folder, run="breakdown", summary=str(summary_path))],
                              cwd=folder, capture_output=True, text=True, check=True)
        marks = json.loads(done.stderr.strip().splitlines()[-1])
        attempts = [a for fact in json.loads(summary_path.read_text())["facts"] for a in fact.get("attempts", [])]
    seconds = {name: sum(end - start for start, end in spans) for name, spans in marks.items()}
    run_start, run_end = marks["run"][0]
    first, last = min(a["start"] for a in attempts), max(a["end"] for a in attempts)
    result = {**seconds, "pool_start": first - run_start, "iterations_span": last - first,
              "iterations_sum": sum(a["end"] - a["start"] for a in attempts), "after_iterations": run_end - last}
    result["rest"] = seconds["total"] - sum(v for k, v in seconds.items() if k != "total")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    loops = loops_for(0.050)
    print(f"# local backend / joblib.Parallel(n_jobs=-1), medians (min–max) of {options.rounds} ABBA rounds, {time.strftime('%Y-%m-%d')}")
    a = compare("(a) 200 tasks of ~50 ms CPU (goal <= 1.10)", 200, loops, options.rounds)
    b = compare("(b) 2000 tasks of almost no work (goal <= 10)", 2000, 0, options.rounds)
    print(f"ratios: a={a.ratio.text()} b={b.ratio.text()}")


if __name__ == "__main__":
    main()
