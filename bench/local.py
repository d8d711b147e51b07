"""The local backend against joblib.Parallel(n_jobs=-1) over the same tasks.

Both sides run in fresh Python processes (cold worker pools), timed from
inside, from reading task.py to the aggregate: for the kit that includes
staging every input to disk, a working directory per task and the outputs
collected from disk. Rounds alternate between the two so that the machine's
noise hits both alike; the ratios are of medians.

    python -m bench.local [--rounds 3]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

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


def compare(label: str, count: int, loops: int, rounds: int) -> float:
    kit_times, joblib_times = [], []
    with tempfile.TemporaryDirectory() as folder:
        kit = Kit(Path(folder))
        kit.write_task(TASK.format(loops=loops, count=count))
        for round_ in range(rounds):
            seconds, reference = timed(JOBLIB.format(kit=folder))
            joblib_times.append(seconds)
            seconds, result = timed(KIT.format(kit=folder, run=f"bench{round_}"))
            kit_times.append(seconds)
            assert result == reference, (result, reference)
    ratio = statistics.median(kit_times) / statistics.median(joblib_times)
    print(f"{label:<42} kit {statistics.median(kit_times):7.3f} s   joblib {statistics.median(joblib_times):7.3f} s   ratio {ratio:5.2f}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    loops = loops_for(0.050)
    print(f"# local backend / joblib.Parallel(n_jobs=-1), medians of {options.rounds} rounds, {time.strftime('%Y-%m-%d')}")
    a = compare("(a) 200 tasks of ~50 ms CPU (goal <= 1.10)", 200, loops, options.rounds)
    b = compare("(b) 2000 tasks of almost no work (goal <= 10)", 2000, 0, options.rounds)
    print(f"ratios: a={a:.2f} b={b:.2f}")


if __name__ == "__main__":
    main()
