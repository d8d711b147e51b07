"""Loading and checking task.py, the user's job definition.

task.py may also say which worker runs its tasks, for a worker that is not
worker.py (one in another language), with two module-level constants:

    WORKER = ["Rscript", "worker.R"]   # the command each task runs in its working directory
    FORMAT = "json"                    # the format of the files it reads and writes

An argument of WORKER naming a file beside task.py is made a path to it: on
this machine the kit's folder, in the worker image /app. With WORKER, task()
is the worker's business and task.py need not define it.
"""

import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from .errors import SuperbatchError
from .formats import FORMATS

IMAGE_HOME = "/app"  # where the Dockerfile copies the kit's files

REQUIRED_FUNCTIONS = {
    # name: the positional arguments the kit calls it with
    "global_config": 0,
    "parameters": 0,
    "task": 2,
    "aggregate": 1,
}


@dataclass
class TaskDefinition:
    path: Path
    global_config: Callable[[], Any]
    parameters: Callable[[], Any]
    task: Optional[Callable[[Any, Any], Any]]
    aggregate: Callable[[list], Any]
    worker: Optional[tuple] = None  # task.py's WORKER, if any
    format: Optional[str] = None  # task.py's FORMAT, if any


def load_task_definition(kit_dir: Path) -> TaskDefinition:
    """Import kit_dir/task.py and check that it defines the four functions."""
    path = Path(kit_dir) / "task.py"
    if not path.is_file():
        raise SuperbatchError(f"{path} not found: the kit needs a task.py beside controller.py")
    module = _import(path)
    worker, format = _worker(module)
    functions = {}
    for name, arity in REQUIRED_FUNCTIONS.items():
        function = getattr(module, name, None)
        if function is None and name == "task" and worker:
            functions[name] = None  # the worker's own language defines it
            continue
        if function is None:
            raise SuperbatchError(f"task.py does not define {name}(); it needs global_config(), parameters(), task(global_config, parameters) and aggregate(results)")
        if not callable(function):
            raise SuperbatchError(f"task.py: {name} must be a function, not {type(function).__name__}")
        _check_arity(name, function, arity)
        functions[name] = function
    return TaskDefinition(path=path, **functions, worker=worker, format=format)


def _worker(module) -> tuple:
    """task.py's WORKER and FORMAT, checked (None for what it does not set)."""
    worker = getattr(module, "WORKER", None)
    format = getattr(module, "FORMAT", None)
    if worker is not None:
        if isinstance(worker, str) or not isinstance(worker, (list, tuple)) or not worker or not all(isinstance(a, str) and a for a in worker):
            raise SuperbatchError(f"task.py: WORKER must be a list of strings, the command each task runs (such as [\"Rscript\", \"worker.R\"]), not {worker!r}")
        worker = tuple(worker)
    if format is not None and format not in FORMATS:
        raise SuperbatchError(f"task.py: FORMAT must be one of {', '.join(map(repr, FORMATS))}, not {format!r}")
    return worker, format


def worker_command(worker: tuple, kit_dir: Path, home: str) -> list:
    """WORKER as the command line to run, its files of the kit found under `home`."""
    return [f"{home.rstrip('/')}/{argument}" if (Path(kit_dir) / argument).is_file() and not Path(argument).is_absolute() else argument
            for argument in worker]


def _import(path: Path):
    # Import it as the module "task", the name worker.py imports, so that
    # pickles of classes defined in task.py load on both sides.
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("task", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["task"] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        del sys.modules["task"]
        raise SuperbatchError(f"task.py has a syntax error at line {error.lineno}: {error.msg}") from error
    except Exception as error:
        del sys.modules["task"]
        raise SuperbatchError(f"task.py failed to import: {type(error).__name__}: {error}") from error
    return module


def _check_arity(name: str, function, arity: int) -> None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # a builtin or C function: nothing to check
    try:
        signature.bind(*([None] * arity))
    except TypeError:
        wanted = {0: "no arguments", 1: "one argument", 2: "two arguments"}[arity]
        raise SuperbatchError(f"task.py: {name}{signature} must take {wanted}") from None
