"""Loading and checking task.py, the user's job definition."""

import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import SuperbatchError

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
    task: Callable[[Any, Any], Any]
    aggregate: Callable[[list], Any]


def load_task_definition(kit_dir: Path) -> TaskDefinition:
    """Import kit_dir/task.py and check that it defines the four functions."""
    path = Path(kit_dir) / "task.py"
    if not path.is_file():
        raise SuperbatchError(f"{path} not found: the kit needs a task.py beside controller.py")
    module = _import(path)
    functions = {}
    for name, arity in REQUIRED_FUNCTIONS.items():
        function = getattr(module, name, None)
        if function is None:
            raise SuperbatchError(f"task.py does not define {name}(); it needs global_config(), parameters(), task(global_config, parameters) and aggregate(results)")
        if not callable(function):
            raise SuperbatchError(f"task.py: {name} must be a function, not {type(function).__name__}")
        _check_arity(name, function, arity)
        functions[name] = function
    return TaskDefinition(path=path, **functions)


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
