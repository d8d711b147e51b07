"""What every resource shares: times as the service writes them, etags, the
clock that runs delayed state changes, and the request and task counters.
"""

from __future__ import annotations

import collections
import email.utils
import heapq
import itertools
import threading
import time

from .. import schemas


API_VERSION = "2025-06-01"


UNLIMITED = "P10675199DT2H48M5.4775807S"


DEFAULT_RETENTION = "P7D"


DEFAULT_RESIZE_TIMEOUT = "PT15M"
DEFAULT_USER_IDENTITY = {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}}


def now_us() -> int:
    return time.time_ns() // 1000


def iso(us: int | None) -> str | None:
    if us is None:
        return None
    secs, frac = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:06d}Z"


def http_date(us: int) -> str:
    return email.utils.formatdate(us / 1e6, usegmt=True)


def duration_seconds(text: str | None) -> float | None:
    """ISO 8601 duration -> seconds (years and months taken as 365 and 30 days)."""
    m = schemas.DURATION_PATTERN.match(text or "")
    if not text or not m:
        return None
    y, mo, w, d, _, h, mi, s, _ = m.groups()
    n = lambda g: float(g[:-1]) if g else 0.0  # noqa: E731 - strip the unit letter
    return (((n(y) * 365 + n(mo) * 30 + n(w) * 7 + n(d)) * 24 + n(h)) * 60 + n(mi)) * 60 + n(s)


_etags = itertools.count(0x8DC000000000000)


def new_etag() -> str:
    return f"0x{next(_etags):X}"


class Clock:
    """One thread that runs delayed state changes (node start-up, recovery)."""

    def __init__(self):
        self._heap: list = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="batch-emulator-clock", daemon=True)
        self._thread.start()

    def after(self, delay: float, fn, *args) -> None:
        with self._cv:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), fn, args))
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
        self._thread.join(timeout=5)

    def _loop(self):
        while True:
            with self._cv:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cv.wait(timeout=(self._heap[0][0] - time.monotonic()) if self._heap else None)
                if self._stopped:
                    return
                _, _, fn, args = heapq.heappop(self._heap)
            try:
                fn(*args)
            except Exception:  # a state change on something already deleted
                pass


class Stats:
    """Request and task counters, read through /_emulator/stats."""

    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self):
        with self._lock:
            self.requests: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
            self.faults = collections.Counter()
            self.tasks = collections.Counter()
            self.started = time.time()

    def request(self, operation: str, status: int):
        with self._lock:
            self.requests[operation][str(status)] += 1

    def fault(self, kind: str):
        with self._lock:
            self.faults[kind] += 1

    def task(self, event: str, n: int = 1):
        with self._lock:
            self.tasks[event] += n

    def snapshot(self) -> dict:
        with self._lock:
            by_op = {op: dict(sorted(c.items())) for op, c in sorted(self.requests.items())}
            by_status = collections.Counter()
            for c in self.requests.values():
                by_status.update(c)
            return {
                "requests": {
                    "total": sum(by_status.values()),
                    "byStatus": dict(sorted(by_status.items())),
                    "byOperation": by_op,
                },
                "faults": dict(self.faults),
                "tasks": dict(self.tasks),
                "since": iso(int(self.started * 1e6)),
            }
