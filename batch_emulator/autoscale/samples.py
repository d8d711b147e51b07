"""Sample history of a pool's metrics, and the methods a formula calls on it.

The service records a sample of each metric every 30 seconds and a formula
reads them with ``$X.GetSample(...)``, ``GetSamplePercent``,
``GetSamplePeriod``, ``Count`` and ``HistoryBeginTime`` (article "Create a
formula to automatically scale compute nodes in a Batch pool", "Obtain sample
data"). The emulator records one sample per period (and one at every
evaluation), on its own clock. ``scale`` is how many real seconds one second
of the service's clock lasts (``--autoscale-interval``, see the README): with
scale 1/150 a "30 second" sample period lasts 0.2 s and ``TimeInterval_Minute
* 10`` looks back 4 s of real time, so percentages mean what they would mean
on the service.
"""

from __future__ import annotations

import collections
import datetime as dt
import time

from .values import EvalError, Interval, Timestamp, fmt, type_name

SAMPLE_PERIOD = 30.0          # service seconds between two samples (article)
MIN_REAL_PERIOD = 0.1         # real seconds: the emulator samples no faster than this
MAX_SAMPLES = 5000            # kept per pool (a day of 30 s samples is 2880)

# Read-only service-defined variables that are sampled (article, "Variables").
METRICS = (
    "$CPUPercent", "$WallClockSeconds", "$MemoryBytes", "$DiskBytes", "$DiskReadBytes", "$DiskWriteBytes",
    "$DiskReadOps", "$DiskWriteOps", "$NetworkInBytes", "$NetworkOutBytes", "$SampleNodeCount",
    "$ActiveTasks", "$RunningTasks", "$PendingTasks", "$SucceededTasks", "$FailedTasks",
    "$CurrentDedicatedNodes", "$CurrentLowPriorityNodes", "$UsableNodeCount", "$PreemptedNodeCount",
)
METRIC_NAMES = {m.lower(): m for m in METRICS}
# Spellings older formulas use (the REST reference's own example uses $CurrentDedicated).
METRIC_NAMES.update({"$currentdedicated": "$CurrentDedicatedNodes", "$currentlowpriority": "$CurrentLowPriorityNodes"})


class History:
    """The samples of one pool: (real time, wall time, {metric: value})."""

    def __init__(self, scale: float = 1.0):
        self.scale = scale
        self.samples: collections.deque = collections.deque(maxlen=MAX_SAMPLES)

    @property
    def real_period(self) -> float:
        return max(SAMPLE_PERIOD * self.scale, MIN_REAL_PERIOD)

    def add(self, metrics: dict, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.samples.append((now, dt.datetime.now(dt.timezone.utc), dict(metrics)))

    def due(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return not self.samples or now - self.samples[-1][0] >= self.real_period * 0.999

    def latest(self, name: str) -> float:
        return self.samples[-1][2].get(name, 0.0) if self.samples else 0.0


class Metric:
    """A sampled variable as a formula sees it: a value and methods."""
    __slots__ = ("name", "history")

    def __init__(self, name: str, history: History):
        self.name, self.history = name, history

    def current(self) -> float:
        return self.history.latest(self.name)

    # -- the methods of the article's "Obtain sample data" table --

    def call(self, method: str, pos, args):
        fn = _METHODS.get(method.lower())
        if fn is None:
            raise EvalError(pos, f"{self.name} has no method {method}()")
        return fn(self, pos, args)

    def _ago(self, pos, v) -> float:
        """A look-back bound (timeinterval, or timestamp) as real seconds ago."""
        if isinstance(v, Interval):
            return max(0.0, v.seconds) * self.history.scale
        if isinstance(v, Timestamp):
            ago = (dt.datetime.now(dt.timezone.utc) - v.when).total_seconds()
            return max(0.0, ago) * self.history.scale
        raise EvalError(pos, f"Expected a timeinterval or timestamp, got {type_name(v)}")

    def _window(self, pos, bounds):
        """The samples between two look-back bounds, and the share of those expected."""
        agos = sorted(self._ago(pos, b) for b in bounds) if len(bounds) == 2 else [0.0, self._ago(pos, bounds[0])]
        newest, oldest = agos
        now = time.monotonic()
        found = [s[2].get(self.name, 0.0) for s in reversed(self.history.samples)
                 if newest <= now - s[0] <= oldest + 1e-9]
        expected = max(1.0, (oldest - newest) / self.history.real_period)
        return found, min(100.0, 100.0 * len(found) / expected)

    def get_sample(self, pos, args):
        if len(args) == 1 and isinstance(args[0], float):   # the last N samples
            n = max(0, int(args[0]))
            values = [s[2].get(self.name, 0.0) for s in list(self.history.samples)[-n:]][::-1] if n else []
            if len(values) < n:
                raise _insufficient(pos, self.name, 100.0, 100.0 * len(values) / n)
            return values
        percent = None
        if args and isinstance(args[-1], float):
            percent, args = args[-1], args[:-1]
        if len(args) not in (1, 2):
            raise EvalError(pos, "GetSample() takes a count, or a start [and end] time with an optional percent")
        values, got = self._window(pos, args)
        if (percent is not None and got < percent) or not values:
            raise _insufficient(pos, self.name, percent if percent is not None else 0.0, got)
        return values

    def get_sample_percent(self, pos, args):
        if len(args) not in (1, 2):
            raise EvalError(pos, "GetSamplePercent() takes a start [and end] time")
        return float(round(self._window(pos, args)[1]))

    def get_sample_period(self, pos, args):
        return Interval(SAMPLE_PERIOD)

    def count(self, pos, args):
        return float(len(self.history.samples))

    def history_begin_time(self, pos, args):
        if not self.history.samples:
            raise _insufficient(pos, self.name, 0.0, 0.0)
        return Timestamp(self.history.samples[0][1])


def _insufficient(pos, name, wanted, got) -> EvalError:
    # The error body the REST reference shows for "Evaluate an automatic scaling formula".
    return EvalError(pos, f"Insufficient data from data set: {name} wanted {fmt(float(round(wanted)))}%, "
                          f"received {fmt(float(round(got)))}%",
                     code="InsufficientSampleData",
                     message="Autoscale evaluation failed due to insufficient sample data")


_METHODS = {
    "getsample": Metric.get_sample,
    "getsamplepercent": Metric.get_sample_percent,
    "getsampleperiod": Metric.get_sample_period,
    "count": Metric.count,
    "historybegintime": Metric.history_begin_time,
}
