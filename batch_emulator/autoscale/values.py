"""The formula language's types and its built-in functions.

Types (article "Create a formula to automatically scale compute nodes in a
Batch pool", section "Types"): double (a Python float; true is non-zero),
doubleVec (a list of floats), string, timestamp and timeinterval. Functions:
the article's "Functions" table; a doubleVecList argument is any mix of
doubles and doubleVecs, flattened before use ("avg(v, 7)" = "avg(1,2,3,7)").
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import random
import statistics


class EvalError(Exception):
    """An evaluation failure as the service reports it in autoScaleRun.error."""

    def __init__(self, pos, detail: str, code: str = "AutoScalingFormulaEvaluationError",
                 message: str = "Autoscale evaluation failed"):
        super().__init__(detail)
        self.pos, self.detail, self.code, self.message = pos, detail, code, message

    def value(self) -> str:
        line, col = self.pos or (1, 1)
        return f"Line {line}, Col {col}: {self.detail}"


class Stop(Exception):
    """stop(): the article's "Stops evaluation of the autoscaling expression"."""


class Interval:
    """A timeinterval, in seconds of the service's clock."""
    __slots__ = ("seconds",)

    def __init__(self, seconds: float):
        self.seconds = float(seconds)

    def __repr__(self):
        return f"Interval({self.seconds})"


class Timestamp:
    """A timestamp with the members the article lists (weekday 1 = Monday, 0 = Sunday)."""
    __slots__ = ("when",)
    MEMBERS = ("year", "month", "day", "weekday", "hour", "minute", "second")

    def __init__(self, when: dt.datetime):
        self.when = when

    def member(self, name: str) -> float:
        w = self.when
        if name == "weekday":
            return float(w.isoweekday() % 7)
        return float(getattr(w, name))


# "timeinterval" constants (article, section "Types").
INTERVALS = {
    "TimeInterval_Zero": 0.0, "TimeInterval_100ns": 1e-7, "TimeInterval_Microsecond": 1e-6,
    "TimeInterval_Millisecond": 1e-3, "TimeInterval_Second": 1.0, "TimeInterval_Minute": 60.0,
    "TimeInterval_Hour": 3600.0, "TimeInterval_Day": 86400.0, "TimeInterval_Week": 7 * 86400.0,
    "TimeInterval_Year": 365 * 86400.0,
}


def type_name(v) -> str:
    if isinstance(v, float):
        return "double"
    if isinstance(v, list):
        return "doubleVec"
    if isinstance(v, str):
        return "string"
    if isinstance(v, Interval):
        return "timeinterval"
    if isinstance(v, Timestamp):
        return "timestamp"
    return type(v).__name__


def fmt(v) -> str:
    """A value as autoScaleRun.results shows it ("$TargetDedicatedNodes=3")."""
    if isinstance(v, float):
        if math.isfinite(v) and v == int(v) and abs(v) < 1e15:
            return str(int(v))
        return format(v, ".15g")
    if isinstance(v, list):
        return "[" + ",".join(fmt(x) for x in v) + "]"
    if isinstance(v, Timestamp):   # the article's sample results: 2016-10-13T19:18:47.805Z
        return v.when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{v.when.microsecond // 1000:03d}Z"
    if isinstance(v, Interval):    # d.hh:mm:ss, as the service (a .NET TimeSpan) writes one
        total = abs(v.seconds)
        days, rest = divmod(total, 86400)
        h, rest = divmod(rest, 3600)
        m, s = divmod(rest, 60)
        text = f"{int(h):02d}:{int(m):02d}:{s:06.3f}".rstrip("0").rstrip(".")
        return ("-" if v.seconds < 0 else "") + (f"{int(days)}." if days else "") + text
    return str(v)


def _flat(pos, args) -> list[float]:
    out: list[float] = []
    for a in args:
        if isinstance(a, float):
            out.append(a)
        elif isinstance(a, list):
            out.extend(a)
        else:
            raise EvalError(pos, f"Expected double or doubleVec, got {type_name(a)}")
    return out


def _nonempty(pos, name, values):
    if not values:
        raise EvalError(pos, f"{name}() of an empty vector")
    return values


def _one_or_each(pos, name, fn, args):
    """lg/ln/log/ceil/floor/round: a double in, a double out; a doubleVec in, a doubleVec out."""
    if len(args) == 1 and isinstance(args[0], float):
        return _safe(pos, name, fn, args[0])
    return [_safe(pos, name, fn, x) for x in _flat(pos, args)]


def _safe(pos, name, fn, x):
    try:
        return float(fn(x))
    except (ValueError, OverflowError):
        raise EvalError(pos, f"{name}({fmt(x)}) is not defined") from None


def _percentile(pos, args):
    if len(args) != 2 or not isinstance(args[1], float):
        raise EvalError(pos, "percentile(doubleVec v, double p) takes a vector and a percentage")
    values = sorted(_nonempty(pos, "percentile", _flat(pos, args[:1])))
    p = min(max(args[1], 0.0), 100.0)
    return values[min(len(values) - 1, max(0, math.ceil(p / 100.0 * len(values)) - 1))]


def _val(pos, args):
    if len(args) != 2 or not isinstance(args[1], float):
        raise EvalError(pos, "val(doubleVec v, double i) takes a vector and an index")
    values, i = _flat(pos, args[:1]), int(args[1])
    if not 0 <= i < len(values):
        raise EvalError(pos, f"val(): index {i} is outside a vector of {len(values)}")
    return values[i]


def _time(pos, args):
    if not args or args[0] == "":
        return Timestamp(dt.datetime.now(dt.timezone.utc))
    if len(args) != 1 or not isinstance(args[0], str):
        raise EvalError(pos, "time() takes one string (W3C-DTF or RFC 1123)")
    text = args[0].strip()
    try:   # W3C-DTF (ISO 8601)
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:   # RFC 1123
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            raise EvalError(pos, f"time(): '{text}' is neither W3C-DTF nor RFC 1123") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return Timestamp(when.astimezone(dt.timezone.utc))


def _stop(pos, args):
    raise Stop()


def _vec_fn(fn, name):
    return lambda pos, args: float(fn(_nonempty(pos, name, _flat(pos, args))))


def _std(pos, args):
    values = _flat(pos, args)
    return statistics.stdev(values) if len(values) > 1 else 0.0


FUNCTIONS = {
    "avg": _vec_fn(statistics.fmean, "avg"),
    "len": lambda pos, args: float(len(_flat(pos, args))),
    "lg": lambda pos, args: _one_or_each(pos, "lg", math.log2, args),
    "ln": lambda pos, args: _one_or_each(pos, "ln", math.log, args),
    "log": lambda pos, args: _one_or_each(pos, "log", math.log10, args),
    "max": _vec_fn(max, "max"),
    "min": _vec_fn(min, "min"),
    "norm": lambda pos, args: math.sqrt(sum(x * x for x in _flat(pos, args))),
    "percentile": _percentile,
    "rand": lambda pos, args: random.random(),
    "range": _vec_fn(lambda v: max(v) - min(v), "range"),
    "std": _std,
    "stop": _stop,
    "sum": lambda pos, args: float(sum(_flat(pos, args))),
    "time": _time,
    "val": _val,
    "ceil": lambda pos, args: _one_or_each(pos, "ceil", math.ceil, args),
    "floor": lambda pos, args: _one_or_each(pos, "floor", math.floor, args),
    "round": lambda pos, args: _one_or_each(pos, "round", lambda x: math.floor(x + 0.5), args),
}
