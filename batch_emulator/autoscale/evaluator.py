"""Evaluating a parsed formula against a pool's state and sample history.

The rules come from Microsoft's article "Create a formula to automatically
scale compute nodes in a Batch pool"
(https://learn.microsoft.com/azure/batch/batch-automatic-scaling):

- read-write variables $TargetDedicatedNodes, $TargetLowPriorityNodes (start
  at the pool's current targets) and $NodeDeallocationOption (starts at
  "requeue"); the aliases $TargetDedicated and $TargetLowPriority, the full
  name winning when both are set;
- read-only variables: the sampled metrics (samples.METRICS, used directly
  they give their latest sample) and $TaskSlotsPerNode;
- user variables, with or without '$';
- the operations table (a comparison or && || gives 1 or 0; non-zero is true);
- ``stop()`` ends the evaluation, keeping what was set before it.

``results`` is written as the service writes autoScaleRun.results: the three
settable variables first, then every user variable in ordinal order,
"$name=value" joined by ';' (recorded: "$TargetDedicatedNodes=3;
$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue"; a run with user
variables in Azure/doAzureParallel#215).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .grammar import parse
from .samples import METRIC_NAMES, History, Metric
from .values import FUNCTIONS, INTERVALS, EvalError, Interval, Stop, Timestamp, fmt, type_name

DEALLOCATION = ("requeue", "terminate", "taskcompletion", "retaineddata")
SETTABLE = ("$TargetDedicatedNodes", "$TargetLowPriorityNodes", "$NodeDeallocationOption")
_SETTABLE = {n.lower(): n for n in SETTABLE}
_ALIASES = {"$targetdedicated": "$TargetDedicatedNodes", "$targetlowpriority": "$TargetLowPriorityNodes"}


@dataclass
class Outcome:
    """One evaluation: the settable values, the results string, an error if any."""
    dedicated: int
    low_priority: int
    deallocation: str
    results: str
    error: EvalError | None = None
    variables: dict = field(default_factory=dict)


def evaluate(formula: str, *, history: History, dedicated: int, low_priority: int,
             slots_per_node: int = 1) -> Outcome:
    """Parse and run ``formula``. A syntax error raises grammar.FormulaSyntaxError;
    anything that goes wrong while running is in ``Outcome.error``."""
    return _Run(history, dedicated, low_priority, slots_per_node).run(parse(formula))


class _Run:
    def __init__(self, history, dedicated, low_priority, slots):
        self.history, self.slots = history, float(slots)
        self.settable = {"$TargetDedicatedNodes": float(dedicated), "$TargetLowPriorityNodes": float(low_priority),
                         "$NodeDeallocationOption": "requeue"}
        self.set_full: set[str] = set()
        self.aliased: dict[str, object] = {}
        self.user: dict[str, object] = {}

    # -- statements --

    def run(self, statements) -> Outcome:
        error = None
        try:
            for stmt in statements:
                if stmt[0] == "assign":
                    self.assign(stmt[1], stmt[2], self.value(stmt[3]))
                else:
                    self.eval(stmt[2])
        except Stop:
            pass
        except EvalError as e:
            error = e
        except RecursionError:
            error = EvalError((1, 1), "The formula is nested too deeply")
        for alias, value in self.aliased.items():   # the full name wins when both are set
            if alias not in self.set_full:
                self.settable[alias] = value
        if error is None:
            error = self._check_settable()
        return self._outcome(error)

    def assign(self, pos, name: str, value) -> None:
        low = name.lower()
        if low in _SETTABLE:
            self.settable[_SETTABLE[low]] = value
            self.set_full.add(_SETTABLE[low])
        elif low in _ALIASES:
            self.aliased[_ALIASES[low]] = value
        elif low in METRIC_NAMES or low == "$taskslotspernode":
            raise EvalError(pos, f"{name} is read-only")
        else:
            self.user[name] = value

    def _check_settable(self):
        for name in SETTABLE[:2]:
            v = self.settable[name]
            if not isinstance(v, float) or v != v:
                return EvalError((1, 1), f"{name} must be a double, not {type_name(v)}")
        option = self.settable["$NodeDeallocationOption"]
        if option not in DEALLOCATION:
            return EvalError((1, 1), f"$NodeDeallocationOption must be one of {', '.join(DEALLOCATION)}, "
                                     f"not {fmt(option)}")
        return None

    def _outcome(self, error) -> Outcome:
        parts = [f"{n}={fmt(self.settable[n])}" for n in SETTABLE]
        parts += [f"{n}={fmt(self.user[n])}" for n in sorted(self.user)]
        count = lambda v: max(0, int(v)) if isinstance(v, float) and v == v else 0  # noqa: E731
        return Outcome(dedicated=count(self.settable["$TargetDedicatedNodes"]),
                       low_priority=count(self.settable["$TargetLowPriorityNodes"]),
                       deallocation=str(self.settable["$NodeDeallocationOption"]),
                       results=";".join(parts), error=error, variables=dict(self.user))

    # -- expressions --

    def value(self, node):
        """An expression's value, a sampled variable read as its latest sample."""
        v = self.eval(node)
        return v.current() if isinstance(v, Metric) else v

    def eval(self, node):
        kind, pos = node[0], node[1]
        if kind == "num":
            return node[2]
        if kind == "str":
            return node[2]
        if kind == "var":
            return self.lookup(pos, node[2])
        if kind == "vector":
            out = []
            for item in node[2]:
                v = self.value(item)
                if isinstance(v, float):
                    out.append(v)
                elif isinstance(v, list):
                    out.extend(v)
                else:
                    raise EvalError(item[1], f"A vector holds doubles, not {type_name(v)}")
            return out
        if kind == "ternary":
            return self.value(node[3]) if self.truth(node[2]) else self.value(node[4])
        if kind == "binop":
            return self.binop(pos, node[2], node[3], node[4])
        if kind == "unop":
            return self.unop(pos, node[2], self.value(node[3]))
        if kind == "call":
            fn = FUNCTIONS.get(node[2].lower())
            if fn is None:
                raise EvalError(pos, f"Unknown function {node[2]}()")
            return fn(pos, [self.value(a) for a in node[3]])
        if kind == "method":
            target = self.eval(node[2])
            if not isinstance(target, Metric):
                raise EvalError(pos, f"{node[3]}() is a method of a sampled variable, not of a {type_name(target)}")
            return target.call(node[3], pos, [self.value(a) for a in node[4]])
        if kind == "member":
            target = self.value(node[2])
            if isinstance(target, Timestamp) and node[3].lower() in Timestamp.MEMBERS:
                return target.member(node[3].lower())
            raise EvalError(pos, f"A {type_name(target)} has no member {node[3]}")
        raise EvalError(pos, f"Cannot evaluate {kind}")

    def lookup(self, pos, name: str):
        if name in self.user:
            return self.user[name]
        low = name.lower()
        if low in _SETTABLE:
            return self.settable[_SETTABLE[low]]
        if low in _ALIASES:
            return self.aliased.get(_ALIASES[low], self.settable[_ALIASES[low]])
        if low in METRIC_NAMES:
            return Metric(METRIC_NAMES[low], self.history)
        if low == "$taskslotspernode":
            return self.slots
        if name in INTERVALS:
            return Interval(INTERVALS[name])
        if low in DEALLOCATION:   # "$NodeDeallocationOption = taskcompletion;" (article examples)
            return low
        raise EvalError(pos, f"Undefined variable {name}")

    def truth(self, node) -> bool:
        v = self.value(node)
        if not isinstance(v, float):
            raise EvalError(node[1], f"A condition must be a double, not {type_name(v)}")
        return v != 0.0

    def unop(self, pos, op, v):
        if op == "!" and isinstance(v, float):
            return 1.0 if v == 0.0 else 0.0
        if op == "-":
            if isinstance(v, float):
                return -v
            if isinstance(v, Interval):
                return Interval(-v.seconds)
            if isinstance(v, list):
                return [-x for x in v]
        raise EvalError(pos, f"Operator {op} does not apply to a {type_name(v)}")

    def binop(self, pos, op, left_node, right_node):
        if op in ("&&", "||"):
            left = self.truth(left_node)
            if op == "&&" and not left:
                return 0.0
            if op == "||" and left:
                return 1.0
            return 1.0 if self.truth(right_node) else 0.0
        return arithmetic(pos, op, self.value(left_node), self.value(right_node))


_COMPARE = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, "==": lambda a, b: a == b,
            ">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "!=": lambda a, b: a != b}


def arithmetic(pos, op, a, b):
    """The article's "Operations" table."""
    if op in _COMPARE:
        key = {float: float, str: str, Timestamp: lambda t: t.when, Interval: lambda i: i.seconds}
        if type(a) is type(b) and type(a) in key:
            return 1.0 if _COMPARE[op](key[type(a)](a), key[type(b)](b)) else 0.0
    elif isinstance(a, float) and isinstance(b, float):
        if op == "/" and b == 0.0:
            raise EvalError(pos, "Division by zero")
        return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else 0.0}[op]
    elif isinstance(a, list) or isinstance(b, list):
        return _vector(pos, op, a, b)
    elif isinstance(a, Interval) or isinstance(b, Interval):
        out = _interval(pos, op, a, b)
        if out is not None:
            return out
    elif isinstance(a, Timestamp) and isinstance(b, Timestamp) and op == "-":
        return Interval((a.when - b.when).total_seconds())
    raise EvalError(pos, f"Operator {op} does not apply to {type_name(a)} and {type_name(b)}")


def _vector(pos, op, a, b):
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            raise EvalError(pos, f"Vectors of {len(a)} and {len(b)} elements")
        pairs = list(zip(a, b))
    elif isinstance(a, list) and isinstance(b, float):
        pairs = [(x, b) for x in a]
    elif isinstance(a, float) and isinstance(b, list):
        pairs = [(a, y) for y in b]
    else:
        raise EvalError(pos, f"Operator {op} does not apply to {type_name(a)} and {type_name(b)}")
    return [arithmetic(pos, op, x, y) for x, y in pairs]


def _interval(pos, op, a, b):
    import datetime as dt

    if isinstance(a, Interval) and isinstance(b, Interval) and op in "+-":
        return Interval(a.seconds + b.seconds if op == "+" else a.seconds - b.seconds)
    if op == "*" and isinstance(a, float) and isinstance(b, Interval):
        return Interval(a * b.seconds)
    if isinstance(a, Interval) and isinstance(b, float) and op in "*/":
        if op == "/" and b == 0.0:
            raise EvalError(pos, "Division by zero")
        return Interval(a.seconds * b if op == "*" else a.seconds / b)
    if op == "+" and isinstance(a, Interval) and isinstance(b, Timestamp):
        a, b = b, a
    if isinstance(a, Timestamp) and isinstance(b, Interval) and op in "+-":
        delta = dt.timedelta(seconds=b.seconds)
        return Timestamp(a.when + delta if op == "+" else a.when - delta)
    return None
