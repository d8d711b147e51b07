"""The benchmark table of the README, in one command: `python -m bench` (`make bench`).

Every figure is a ratio or a count measured in this one run, on this machine:

  local / joblib     bench/local.py: the local backend's wall time over
                     joblib.Parallel(n_jobs=-1)'s on the same tasks
  azure              bench/azure.py, on Azurite and the Batch emulator:
                     staging vs the raw SDK at the same concurrency and vs a
                     loop, Batch requests per task, last task's end to the
                     printed aggregate, and the controller's peak memory at
                     two sizes
  elastic pools      bench/elastic.py, on Azurite and the emulator: idle
                     node-minutes after the last task, elastic vs fixed pool,
                     and tasks added to the first node idle (about 40 s)
  chunks (issue 16)  bench/chunks.py: B1-B5, --chunk auto vs --chunk 1 with a
                     modelled fixed cost per task, config reads per node, a
                     100,000-iteration run (about 10 minutes; alone:
                     `python -m bench chunks`, written to bench/results/chunks.md)
  worker image       bench/docker.py, through the Docker engine: image size,
                     first build, rebuilds, one container's cost (skipped,
                     with the reason printed, where there is no engine)

Comparisons run in ABBA order over the rounds; every timed figure is the
median over rounds with its min–max range.

The table is printed (markdown) and written to bench/results/latest.md.

    python -m bench [--quick] [--rounds N]
    python -m bench chunks [--rounds N]

--quick uses smaller sizes (a try-out, not the README's figures).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from bench import azure, chunks, docker, elastic, local
from bench.stats import Spread

RESULTS = Path(__file__).resolve().parent / "results"

SIZES = {  # (local: tasks (a), tasks (b)), azure: staged files and run, memory: small and large run
    False: dict(local_a=200, local_b=2000, azure=2000, memory=(2000, 20000)),
    True: dict(local_a=50, local_b=500, azure=500, memory=(500, 5000)),
}


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({cpu}), {memory:.1f} GiB memory, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def load() -> str:
    try:
        return "{:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    except OSError:
        return "?"


def row(figure: str, value: str, goal: str, met) -> str:
    shown = "—" if met is None else (met if isinstance(met, str) else ("yes" if met else "**no**"))
    return f"| {figure} | {value} | {goal} | {shown} |"


def main() -> None:
    if sys.argv[1:2] == ["chunks"]:  # the chunks figures alone
        chunks.main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one round: a try-out, not the real figures")
    parser.add_argument("--rounds", type=int, help="rounds of each comparison and timing (default: 5, 2 with --quick)")
    parser.add_argument("--poll-interval", type=float, default=azure.DEFAULT_POLL, help="the azure runs' --poll-interval (default: the kit's, %(default)s s)")
    options = parser.parse_args()
    sizes = SIZES[options.quick]
    rounds = options.rounds or (2 if options.quick else 5)
    poll = options.poll_interval

    def say(message: str) -> None:
        print(f"[bench] {message}", file=sys.stderr, flush=True)

    started = time.time()
    load_before = load()
    say(f"local backend vs joblib.Parallel, {rounds} rounds ...")
    with contextlib.redirect_stdout(sys.stderr):  # local.py's own lines are progress here
        loops = local.loops_for(0.050)
        local_a = local.compare(f"(a) {sizes['local_a']} tasks of ~50 ms CPU", sizes["local_a"], loops, rounds)
        local_b = local.compare(f"(b) {sizes['local_b']} tasks of almost no work", sizes["local_b"], 0, rounds)

    small, large = sizes["memory"]
    with tempfile.TemporaryDirectory(prefix="bench-") as folder:
        kit = azure.Kit(Path(folder))
        say(f"staging {sizes['azure']} inputs: kit vs raw SDK (same threads) vs one at a time, {rounds} ABBA rounds ...")
        with azure.local_cloud() as cloud:
            upload = azure.staging(cloud, kit, sizes["azure"], rounds)
        say(f"  kit {upload.rate(upload.kit):.0f} files/s, SDK {upload.threads} threads {upload.rate(upload.sdk):.0f} files/s, loop {upload.rate(upload.serial):.0f} files/s")
        runs, failed = {}, {}
        for count in sorted({sizes["azure"], small, large}):
            say(f"a {count}-task azure run through the CLI (poll interval {poll:g} s) ...")
            with azure.local_cloud() as fresh:  # fresh servers: each run starts from the same empty state
                try:
                    runs[count] = azure.cli_run(fresh, kit, f"bench{count}", count, poll)
                except RuntimeError as error:  # the table still shows the other figures, and why this one is missing
                    failed[count] = str(error).splitlines()[-1][:300]
                    say(f"  failed: {failed[count]}")
                    continue
            say(f"  {runs[count].wall:.0f} s, {runs[count].request_total} Batch requests, peak RSS {runs[count].peak_rss_mb:.0f} MB")
    say("elastic vs fixed pool: idle node-minutes after the last task, tasks added to the first node idle ...")
    pools = elastic.measure(say=say)
    say("chunks (issue 16): B1-B5 ...")
    chunk_figures = chunks.measure(say=say)
    say(f"the worker image: size, first build, rebuilds, containers, {rounds} rounds ...")
    image = docker.measure(rounds, say=say)
    if isinstance(image, str):
        say(f"  not measured: {image}")
    load_after = load()
    run = runs[sizes["azure"]]

    kit_rate, sdk_rate, serial_rate = upload.rate(upload.kit), upload.rate(upload.sdk), upload.rate(upload.serial)
    rss = {n: (f"{runs[n].peak_rss_mb:.0f} MB" if n in runs else f"run failed ({failed[n]})") for n in (small, large)}
    growth = runs[large].peak_rss_mb - runs[small].peak_rss_mb if small in runs and large in runs else None
    cli_upload = run.summary["phases"]["upload"]
    lines = [
        f"# superbatch benchmarks{' (--quick: smaller sizes, not the real figures)' if options.quick else ''}",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}; `python -m bench{' --quick' if options.quick else ''}` took {(time.time() - started) / 60:.1f} min",
        f"- machine: {machine()}",
        f"- load average (1, 5, 15 min) before: {load_before}; after: {load_after}",
        f"- timed figures: median over {rounds} rounds (min–max); comparisons in ABBA order",
        "",
        "| figure | measured | goal | met |",
        "|---|---|---|---|",
        row(f"local backend / joblib.Parallel, {sizes['local_a']} tasks of ~50 ms CPU (wall time)", local_a.ratio.text(), "≤ 1.10", verdict(local_a.ratio, 1.10)),
        row(f"local backend / joblib.Parallel, {sizes['local_b']} tasks of almost no work (wall time)", local_b.ratio.text(), "≤ 10", verdict(local_b.ratio, 10)),
        row(f"azure staging rate / raw SDK rate, both {upload.threads} threads ({upload.files} files)",
            f"{upload.kit_over_sdk.text()} ({kit_rate:.0f} vs {sdk_rate:.0f} files/s)", "≥ 0.9", verdict(upload.kit_over_sdk, 0.9, at_least=True)),
        row(f"azure staging rate / one-at-a-time upload loop ({upload.files} files)", upload.kit_over_serial.text(".1f"), "—", None),
        row(f"Batch API requests per task, {run.tasks}-task run, poll {poll:g} s", f"{run.requests_per_task:.4f} ({run.request_total} requests)", "≤ 0.05", run.requests_per_task <= 0.05),
        row(f"last task's end → aggregate printed, {run.tasks}-task run", f"{run.latency:.2f} s = {run.latency / poll:.2f} poll intervals", f"≤ 2 poll intervals ({2 * poll:g} s)", run.latency <= 2 * poll),
        row("controller peak RSS", f"{rss[small]} at {small:,} tasks, {rss[large]} at {large:,}", "—", None),
        row(f"controller peak RSS growth, {small:,} → {large:,} tasks", "not measured" if growth is None else f"{growth:+.0f} MB", "≤ 50 MB", None if growth is None else growth <= 50),
        *elastic.rows(pools, row),
        *chunks.rows(chunk_figures, row),
        *image_rows(image),
        "",
        "What each figure is:",
        "",
        f"- local / joblib: bench/local.py — wall time of `controller.py` (local backend, fresh process, staging and collecting included) over `joblib.Parallel(n_jobs=-1)` on the same task.py, in fresh processes; each round runs both back to back, kit first in odd rounds and joblib first in even ones; the ratio of each round, median (min–max). "
        f"Seconds per round: (a) kit {local_a.kit.rounds()}, joblib {local_a.joblib.rounds()}; (b) kit {local_b.kit.rounds()}, joblib {local_b.joblib.rounds()}.",
        f"- staging: the kit's upload code path (`BlobStore.upload_files`, its default `--upload-threads` {upload.threads}) vs `ContainerClient.upload_blob` in a {upload.threads}-thread `ThreadPoolExecutor` (default SDK client) vs the same call in a loop; the same {upload.files} staged inputs (task inputs + config) to Azurite, each side timed around its uploads in a fresh process, rounds in ABBA order, the ratio of each round, median (min–max): "
        f"median rates kit {kit_rate:.0f} files/s, SDK {sdk_rate:.0f} files/s, loop {serial_rate:.0f} files/s (seconds per round: kit {upload_fmt(upload.kit)}, SDK {upload_fmt(upload.sdk)}, loop {upload_fmt(upload.serial)}). "
        f"The {run.tasks}-task CLI run's own upload phase (listing + uploads): {run.tasks + 1} files in {cli_upload:.2f} s = {(run.tasks + 1) / cli_upload:.0f} files/s.",
        f"- Batch requests: every request the emulator served during the CLI run (`controller.py --backend azure`, task command `{azure.CHEAP_COMMAND}`, 4 nodes × 8 slots), divided by the task count: {breakdown(run.requests)}. One run.",
        f"- latency: the aggregate line's arrival on the controller's stdout minus the latest `executionInfo.endTime` of the job's tasks (the emulator's clock, this machine's). One run.",
        f"- memory: `ru_maxrss` of the controller process (RUSAGE_CHILDREN of a fresh parent per run) over whole CLI runs of {small:,} and {large:,} cheap tasks against fresh Azurite and emulator each; one run each, wall times {', '.join(f'{n:,}: {r.wall:.0f} s' for n, r in sorted(runs.items()))}.",
        elastic.note(),
        *chunks.notes(chunk_figures),
        image_note(image),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text(text)
    say(f"written to {RESULTS / 'latest.md'}")


def upload_fmt(values: list) -> str:
    return "/".join(f"{value:.2f}" for value in values)


def verdict(spread: Spread, goal: float, at_least: bool = False):
    """yes: every round met the goal; no: the median missed it; else the range straddles it."""
    meets = (lambda v: v >= goal) if at_least else (lambda v: v <= goal)
    if all(meets(v) for v in spread.values):
        return True
    if not meets(spread.median):
        return False
    return "median only"


def image_rows(image) -> list:
    if isinstance(image, str):
        return [row("worker image: size, first build, rebuilds, container", f"not measured: {image}", "—", None)]
    return [
        row("worker image size", f"{image.image_mb:.0f} MB ({image.base_mb:.0f} MB base + {image.image_mb - image.base_mb:.0f} MB)", "—", None),
        row("worker image, first build (base present)", image.first_build.text(".1f", " s"), "—", None),
        row("worker image, rebuild after a task.py edit", image.rebuild_edit.text(".2f", " s"), "—", None),
        row("worker image, rebuild with nothing changed", image.rebuild_same.text(".2f", " s"), "—", None),
        row("one container, create → removal (`true`)", image.container.text(".2f", " s"), "—", None),
    ]


def image_note(image) -> str:
    if isinstance(image, str):
        return f"- worker image: not measured here ({image})."
    return (f"- worker image: bench/docker.py, through the Docker engine (docker SDK) on a copy of the kit with the example task.py, base `{image.base_image}`; size as the engine reports it (MB = 10^6 bytes); "
            f"first build with nothing cached but the base (pip downloads and installs requirements-worker.txt); rebuilds through `superbatch.image.build` after appending a line to task.py and with nothing changed; "
            f"container: create, start, wait, remove, as the docker backend does per task, {len(image.container.values)} containers. Seconds per round: first build {image.first_build.rounds('.1f')}, after edit {image.rebuild_edit.rounds()}.")


def breakdown(requests: dict) -> str:
    return ", ".join(f"{op} {n}" for op, n in sorted(requests.items(), key=lambda item: -item[1]))


if __name__ == "__main__":
    main()
