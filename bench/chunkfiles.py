"""What a chunks run left behind, read by bench/chunks.py: when each result
came home (the result files' mtimes in the kit's run folder) and where a chunk
task's time went (the chunks' status.json in the run's container)."""

from __future__ import annotations

import json


def home_times(kit, run: str) -> list:
    """When each result came home, sorted: the result files' mtimes (time.time() scale)."""
    return sorted(path.stat().st_mtime for path in (kit.path / "runs" / run).glob("task_*_output.*"))


def last_home(kit, run: str) -> float:
    """When the last result came home: the newest result file's mtime."""
    return home_times(kit, run)[-1]


def inside_chunks(env: dict, run: str, tasks: list, started: float) -> dict:
    """Where a chunk task's time went, from the chunks' status.json
    ({"iterations": {index: {"ok", "tries": [[start, end], ...], "part"}}}; an
    iteration an earlier attempt finished, {"earlier": true}, has no tries),
    mean seconds: "between" one iteration's end and the next one's start
    (worker.py's own work: the result written, added to a part, a part sent
    each second), "before" the first iteration (the task's start to it: the
    modelled fixed cost, Python and worker.py starting, the chunk's files
    read) and "after" the last (to the task's end: the last part and
    status.json sent)."""
    from azure.storage.blob import ContainerClient

    container = ContainerClient.from_connection_string(env["STORAGE_ACCOUNT_CONNECTION_STRING"], f"superbatch-{run}")
    gaps, before, after = [], [], []
    for task_id, start, end in tasks:
        try:
            data = container.download_blob(f"{run}/chunks/{task_id}/status.json").readall()
        except Exception:  # not a chunk task
            continue
        spans = sorted((e["tries"][0][0], e["tries"][-1][1]) for e in json.loads(data)["iterations"].values() if e.get("tries"))
        gaps += [b[0] - a[1] for a, b in zip(spans, spans[1:])]
        if spans:
            before.append(spans[0][0] - started - start)
            after.append(end - (spans[-1][1] - started))
    container.delete_container()
    mean = lambda values: sum(values) / len(values) if values else None  # noqa: E731
    return {"between": mean(gaps), "before": mean(before), "after": mean(after)}
