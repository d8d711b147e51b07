"""Elastic vs fixed pools on Azurite and the Batch emulator: idle node-minutes
after the last task, and the time from tasks added to the first node idle.

One run of the real CLI each (`controller.py --backend azure`, the same small
task, 2 dedicated nodes at most), on a fresh emulator whose 5-minute autoscale
interval lasts INTERVAL seconds (`--autoscale-interval`; every autoscale time
scales with it). After each run the pool is watched for WATCH evaluation
intervals; the emulator's record of every node's allocation and removal gives:

  idle node-minutes   node time after the last task's end, until the node left
                      or the watch ended, in service minutes (real seconds
                      scaled back); a fixed pool keeps counting until deleted
  first node idle     the first task's creation to the first node seen ready
                      (idle, or running when tasks wait; the node list read
                      every 0.05 s while the run goes),
                      in real seconds and as a share of the evaluation interval
                      (without the fast start the pool waits up to a whole one)

    python -m bench.elastic
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.kit import Kit
from tests.support.servers import kit_environment, start_azurite, start_batch_emulator

INTERVAL = 6.0  # real seconds per 5 service minutes
SCALE = 300.0 / INTERVAL  # service seconds per real second
WATCH = 2  # evaluation intervals watched after the run
TASK = """
    import time
    def global_config(): return None
    def parameters(): return list(range(8))
    def task(config, i):
        time.sleep(0.5)
        return i
    def aggregate(results): return sum(results)
"""


def one(kit: Kit, azurite, fixed: bool) -> dict:
    emulator = start_batch_emulator(docker="off", autoscale_interval=INTERVAL)
    try:
        env = {**os.environ, **kit_environment(emulator.account, emulator.key, emulator.endpoint, azurite.blob_endpoint)}
        run = "fixed" if fixed else "elastic"
        command = kit.command("--backend", "azure", "--run", run, "--quiet", "--poll-interval", "0.2",
                              "--task-command", f"{sys.executable} {kit.path / 'worker.py'}",
                              "--dedicated-nodes", "2", "--task-slots", "2", "--delete-container", *(["--fixed-pool"] if fixed else []))
        client = emulator.client()
        first_idle = []

        def watch_idle():  # the node list while the run goes: when did a node first show idle
            while not first_idle and proc.poll() is None:
                try:  # a node with tasks waiting goes from starting straight to running: either counts
                    ready = any(node.state in ("idle", "running") for node in client.list_nodes("superbatch"))
                except Exception:
                    ready = False
                if ready:
                    first_idle.append(time.time())
                time.sleep(0.05)

        proc = subprocess.Popen(command, cwd=kit.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        watcher = threading.Thread(target=watch_idle, daemon=True)
        watcher.start()
        out, err = proc.communicate(timeout=600)
        watcher.join()
        if proc.returncode != 0 or out.strip().splitlines()[-1] != str(sum(range(8))):
            raise RuntimeError(f"{run} run failed: {err[-500:]}")
        time.sleep(WATCH * INTERVAL)
        tasks = list(client.list_tasks(f"superbatch-{run}"))
        added = min(task.creation_time for task in tasks).timestamp()
        last_end = max(task.execution_info.end_time for task in tasks).timestamp()
        watched_to = time.time()
        idle = 0.0
        for entry in emulator.backend.node_lifetimes.values():
            removed = entry["removed"] / 1e6 if entry["removed"] else watched_to
            idle += max(0.0, removed - max(entry["allocated"] / 1e6, last_end))
        return {"idle_node_minutes": idle * SCALE / 60, "first_idle_seconds": (first_idle[0] - added) if first_idle else None,
                "left": sum(1 for entry in emulator.backend.node_lifetimes.values() if not entry["removed"])}
    finally:
        emulator.stop()


def measure(say=print) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-elastic-") as folder, start_azurite() as azurite:
        kit = Kit(Path(folder))
        kit.write_task(TASK)
        figures = {}
        for fixed in (False, True):
            name = "fixed" if fixed else "elastic"
            say(f"a {name} pool: one run, then {WATCH} evaluation intervals ({WATCH * INTERVAL:g} s) watched ...")
            figures[name] = one(kit, azurite, fixed)
        return figures


def rows(figures: dict, row) -> list:
    elastic, fixed = figures["elastic"], figures["fixed"]
    watched = f"{WATCH} evaluation intervals ({WATCH * 5} service minutes) watched after the last task"
    first = elastic["first_idle_seconds"]
    return [
        row(f"idle node-minutes after the last task, elastic pool ({watched})", f"{elastic['idle_node_minutes']:.1f}",
            "≤ 2 nodes × 5 min = 10", elastic["idle_node_minutes"] <= 10),
        row(f"idle node-minutes after the last task, fixed pool (same watch; it keeps counting until deleted)",
            f"{fixed['idle_node_minutes']:.1f} ({fixed['left']} nodes still there)", "—", None),
        row("tasks added → first node ready (idle or running), elastic pool (emulator seconds; share of an evaluation interval)",
            "not seen" if first is None else f"{first:.2f} s = {first / INTERVAL:.2f} interval",
            "≤ 0.2 interval (a minute of 5)", None if first is None else first / INTERVAL <= 0.2),
    ]


def note() -> str:
    return (f"- elastic vs fixed: bench/elastic.py — one CLI run each (8 tasks of 0.5 s, at most 2 nodes × 2 slots) on an emulator whose 5-minute "
            f"autoscale interval lasts {INTERVAL:g} s, times scaled back to the service's; node times from the emulator's record of each node's "
            f"allocation and removal; the pool watched for {WATCH} intervals after the run. The emulator allocates a node in 0.05 s: "
            "real VMs take minutes, which this figure leaves out.")


if __name__ == "__main__":
    result = measure()
    for line in rows(result, lambda *cells: "| " + " | ".join(str(c) for c in cells) + " |"):
        print(line)
