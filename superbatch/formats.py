"""The two formats of a run's files: pickle (Python workers) and json (any language).

A run is staged in one format, recorded in its journal, and keeps it. With
json every value the files carry (the global config, each task's parameters,
each result) must be plain JSON: dicts with string keys, lists (tuples are
written as lists), strings, finite numbers, booleans and None. Anything else
is refused before anything is written, naming the value's type, rather than
converted into something the worker would not recognise.
"""

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib

import constants as names

from .errors import SuperbatchError

FORMATS = ("pickle", "json")
DEFAULT_FORMAT = "pickle"


@dataclass(frozen=True)
class Files:
    """The names of the contract's files in one format."""

    format: str
    config: str  # in the run folder and in every task's working directory
    resource: str  # in a task's working directory
    output: str  # in a task's working directory
    local_resource: str  # in the run folder (and blob storage), .format(index)
    local_output: str  # likewise


FILES = {
    "pickle": Files("pickle", names.GLOBAL_CONFIG_FILE, names.TASK_RESOURCE_FILE, names.TASK_OUTPUT_FILE,
                    names.LOCAL_RESOURCE_PATTERN, names.LOCAL_OUTPUT_PATTERN),
    "json": Files("json", names.GLOBAL_CONFIG_JSON_FILE, names.TASK_RESOURCE_JSON_FILE, names.TASK_OUTPUT_JSON_FILE,
                  names.LOCAL_RESOURCE_JSON_PATTERN, names.LOCAL_OUTPUT_JSON_PATTERN),
}


def encode(value: Any, format: str, what: str) -> bytes:
    """The bytes of a staged file; `what` names the value in a refusal."""
    if format == "json":
        check_json(value, what)
        # ensure_ascii=False: text stays readable UTF-8; allow_nan is already ruled out above
        return json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    buffer = io.BytesIO()
    try:
        joblib.dump(value, buffer)
    except Exception as error:
        raise SuperbatchError(f"{what} cannot be pickled ({type(error).__name__}: {error}); tasks receive their inputs as pickles") from None
    return buffer.getvalue()


def load(path: Path, format: str) -> Any:
    """A file written by a worker (or staged) in this format."""
    if format == "json":
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    return joblib.load(path)


def check_json(value: Any, what: str) -> None:
    """Refuse, in one line, the first value JSON cannot represent as it is."""
    stack = [value]
    while stack:
        item = stack.pop()
        if item is None or isinstance(item, (bool, str, int)):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise SuperbatchError(f"{what}: a float {item!r}, which JSON cannot represent (--format json takes finite numbers only; use None for a missing value)")
            continue
        if isinstance(item, (list, tuple)):
            stack.extend(item)
            continue
        if isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    raise SuperbatchError(f"{what}: a dict key of type {type(key).__name__} ({key!r}); JSON object keys are strings (--format json)")
            stack.extend(item.values())
            continue
        raise SuperbatchError(
            f"{what}: a value of type {type(item).__name__}, which JSON cannot represent "
            f"(--format json takes dicts with string keys, lists, strings, finite numbers, booleans and None)"
        )
