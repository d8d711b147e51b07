"""Replay: the real service's recorded answers, asked again of the emulator.

tests/emulator/recorded/*.json hold exchanges transcribed from recorded
sessions of the real Azure Batch service (see recorded/README.md for the
format). Each scenario is replayed in order through the azure-batch SDK's own
pipeline (so every request is SharedKey-signed like the SDK's), in a state
set up as the recording implies, and each answer must have the recorded
status and the recorded shape: keys, value formats, enum casing, headers.

An exchange marked ``known_difference`` must still differ: once the emulator
is fixed, this test fails until the mark (and its line in the emulator's
README) is removed. Nothing here is skipped.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import urllib.parse
from pathlib import Path

import pytest
from azure.batch import models as bm
from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest

from batch_emulator.state.common import API_VERSION
from tests.support.servers import start_batch_emulator

from .conftest import pool_options, steady_pool, unique, wait_for, wait_pool_steady

RECORDED = Path(__file__).parent / "recorded"
FILES = sorted(RECORDED.glob("*.json"))
ECHO = f"{shlex.quote(sys.executable)} -c {shlex.quote('print(' + repr('hello world') + ')')}"

FORMATS = {
    "<datetime>": re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,7})?Z$"),
    "<http-date>": re.compile(r"^[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT$"),
    "<intstr>": re.compile(r"^\d+$"),
    "<url>": re.compile(r"^https?://\S+$"),
    "<urlencoded-url>": re.compile(r"^https?%3A%2F%2F[^/]+$"),
    "<etag>": re.compile(r"^(W/)?\"?0x[0-9A-F]+\"?$"),
    "<duration>": re.compile(r"^-?P(\d+D)?(T(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$"),
    "<str>": re.compile(r"(?s)^.*$"),
}


def _scenarios():
    for path in FILES:
        doc = json.loads(path.read_text())
        for scenario in doc["scenarios"]:
            yield pytest.param(doc["sources"], scenario, id=f"{path.stem}:{scenario['name']}")


# --- shape comparison --------------------------------------------------------------

def match(shape, actual, where: str = "body") -> list[str]:
    """What in ``actual`` does not have the recorded ``shape`` (empty when it does)."""
    if isinstance(shape, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {actual!r:.80}"]
        problems = []
        ignored = shape.get("__ignored__", {})
        for key, sub in shape.items():
            if key in ("__ignored__", "__exact_keys__") or key in ignored:
                continue
            if sub == "<absent>":
                if key in actual:
                    problems.append(f"{where}.{key}: recorded absent, emulator has {actual[key]!r:.80}")
            elif key not in actual:
                problems.append(f"{where}.{key}: recorded, missing")
            else:
                problems += match(sub, actual[key], f"{where}.{key}")
        if shape.get("__exact_keys__"):
            wanted = {k for k, v in shape.items() if not k.startswith("__") and v != "<absent>"}
            if set(actual) != wanted:
                problems.append(f"{where}: keys {sorted(actual)}, recorded {sorted(wanted)}")
        return problems
    if isinstance(shape, list):
        if not isinstance(actual, list):
            return [f"{where}: expected a list, got {actual!r:.80}"]
        problems = []
        for i, item in enumerate(shape):
            tries = [match(item, a, f"{where}[{j}]") for j, a in enumerate(actual)]
            if not any(not t for t in tries):
                best = min(tries, key=len) if tries else [f"{where}: empty list"]
                problems.append(f"{where}: no item matches recorded item {i}: " + "; ".join(best[:4]))
        return problems
    return [] if leaf_ok(shape, actual) else [f"{where}: recorded {shape!r}, emulator {actual!r:.120}"]


def leaf_ok(shape, actual) -> bool:
    if isinstance(shape, str) and shape.startswith("<") and shape.endswith(">"):
        if shape == "<present>":
            return actual is not None
        if shape == "<int>":
            return isinstance(actual, int) and not isinstance(actual, bool)
        if shape == "<bool>":
            return isinstance(actual, bool)
        if shape.startswith("<one-of:"):
            return actual in shape[8:-1].split(",")
        if shape.startswith("<ci:"):
            return isinstance(actual, str) and actual.lower() == shape[4:-1].lower()
        if shape.startswith("<endswith:"):
            return isinstance(actual, str) and actual.endswith(shape[10:-1])
        pattern = FORMATS[shape]   # an unknown token is a mistake in the data
        return isinstance(actual, str) and bool(pattern.match(actual))
    return type(shape) is type(actual) and shape == actual


def match_headers(shape: dict, headers) -> list[str]:
    problems = []
    for name, want in shape.items():
        got = headers.get(name)
        if want == "<absent>":
            if got is not None:
                problems.append(f"header {name}: recorded absent, emulator sends {got!r}")
        elif got is None:
            problems.append(f"header {name}: recorded, missing")
        elif name.lower() == "content-type":
            if got.replace(" ", "").lower() != want.replace(" ", "").lower():
                problems.append(f"header {name}: recorded {want!r}, emulator {got!r}")
        elif not leaf_ok(want, got):
            problems.append(f"header {name}: recorded {want!r}, emulator {got!r}")
    return problems


# --- the replay --------------------------------------------------------------------

@pytest.fixture(scope="module")
def emu():
    # Nodes take half a second to boot, so a list right after a create sees them booting.
    with start_batch_emulator(node_startup_delay=0.5, docker="off") as e:
        yield e


@pytest.fixture(scope="module")
def sdk(emu):
    with emu.client() as c:
        yield c


@pytest.fixture(scope="module")
def standing_pools(sdk):
    """A steady pool of one idle node, and a pool of no nodes (where tasks never start)."""
    ready, empty = steady_pool(sdk, dedicated=1, slots=1, prefix="ready"), unique("empty")
    sdk.create_pool(pool_options(empty, dedicated=0))
    return {"ready_pool": ready, "empty_pool": empty}


def fill(value, names: dict):
    if isinstance(value, str):
        for key, name in names.items():
            value = value.replace("{" + key + "}", name)
        return value
    if isinstance(value, list):
        return [fill(v, names) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, names) for k, v in value.items()}
    return value


def send(sdk, emu, request: dict, names: dict):
    query = {"api-version": API_VERSION, **fill(request.get("query", {}), names)}
    url = f"{emu.endpoint}{fill(request['path'], names)}?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}"
    headers = fill(request.get("headers", {}), names)
    body = request.get("body")
    if body is not None:
        headers["Content-Type"] = "application/json; odata=minimalmetadata"
        req = HttpRequest(request["method"], url, headers=headers, content=json.dumps(fill(body, names)))
    else:
        req = HttpRequest(request["method"], url, headers=headers)
    try:
        response = sdk.send_request(req)
    except HttpResponseError as e:   # the SDK's pipeline raises on an error status; its answer is what we check
        response = e.response
    response.read()
    return response


def check(step: dict, response, names: dict) -> list[str]:
    problems = []
    if response.status_code != step["status"]:
        problems.append(f"status: recorded {step['status']}, emulator {response.status_code} {response.text()[:200]}")
    problems += match_headers(fill(step.get("headers", {}), names), response.headers)
    if "body" in step:
        try:
            body = response.json()
        except ValueError:
            problems.append(f"body: recorded JSON, emulator sent {response.content[:80]!r}")
        else:
            problems += match(fill(step["body"], names), body)
    if "body_text" in step and step["body_text"] not in response.text():
        problems.append(f"body: recorded text {step['body_text']!r}, emulator {response.text()[:80]!r}")
    return problems


def wait(sdk, step: dict, names: dict) -> None:
    what = step["wait"]
    if what == "pool_steady":
        wait_pool_steady(sdk, fill(step["pool"], names))
    elif what == "nodes_idle":
        pool = fill(step["pool"], names)
        wait_for(lambda: (nodes := list(sdk.list_nodes(pool))) and all(n.state == "idle" for n in nodes),
                 what=f"the nodes of {pool} idle")
    elif what == "task_completed":
        job, task = fill(step["job"], names), fill(step["task"], names)
        wait_for(lambda: sdk.get_task(job, task).state == bm.BatchTaskState.COMPLETED, what=f"task {task} completed")
    else:
        raise AssertionError(f"unknown wait {what!r} in the recorded data")


@pytest.mark.parametrize("sources,scenario", list(_scenarios()))
def test_emulator_answers_like_the_recorded_service(emu, sdk, standing_pools, sources, scenario):
    names = {**standing_pools, "echo": ECHO,
             **{k: unique(k) for k in ("pool", "pool2", "job", "job2", "task", "task2")}}
    failures = []
    for step in scenario["steps"]:
        if "wait" in step:
            wait(sdk, step, names)
            continue
        prefix = step["source"].split(":", 1)[0]
        assert prefix in sources, f"{step['name']}: its source {prefix!r} is not listed"
        problems = check(step, send(sdk, emu, step["request"], names), names)
        label = f"{step['name']} [{step['source']}]"
        if step.get("known_difference"):
            if not problems:
                failures.append(f"{label}: marked as a known difference but now matches the recording; "
                                f"remove the mark here and in batch_emulator/README.md")
        elif problems:
            failures.append(f"{label}:\n    " + "\n    ".join(problems))
    assert not failures, "\n".join(failures)


def test_every_known_difference_is_listed_in_the_emulators_readme():
    readme = (Path(__file__).resolve().parents[2] / "batch_emulator" / "README.md").read_text()
    section = readme.split("## Recorded differences that remain", 1)
    assert len(section) == 2, "batch_emulator/README.md has no 'Recorded differences that remain' section"
    for path in FILES:
        for scenario in json.loads(path.read_text())["scenarios"]:
            for step in scenario["steps"]:
                if step.get("known_difference"):
                    assert step["name"] in section[1], f"{path.name}: {step['name']!r} is not in the README's list"


def test_the_shape_comparison_can_fail():
    """The comparison itself: a missing key, a wrong format, wrong casing, a key that must be absent."""
    shape = {"a": "<datetime>", "b": {"c": "Spread"}, "d": "<absent>", "e": [{"f": "<int>"}]}
    good = {"a": "2026-02-03T00:00:16.4765256Z", "b": {"c": "Spread"}, "e": [{"f": 1}, {"g": 2}], "x": 1}
    assert match(shape, good) == []
    assert match(shape, {**good, "a": "yesterday"})
    assert match(shape, {**good, "b": {"c": "spread"}})
    assert match(shape, {**good, "d": 1})
    assert match(shape, {**good, "e": [{"f": "1"}]})
    assert match({"k": 1, "__exact_keys__": True}, {"k": 1, "extra": 2})
    assert match_headers({"Content-Length": "0", "ETag": "<absent>"}, {"Content-Length": "0"}) == []
    assert match_headers({"Content-Length": "0"}, {})
