"""Seeded, reproducible fault injection.

``--faults transient=0.1,throttle=0.05,preempt=0.3,seed=7`` means: one Batch
request in ten fails with 500 or 503 (half of those *after* the change was
applied, so a retry meets ``TaskExists`` and the like), one in twenty is
answered 429 with a ``Retry-After``, and three task runs in ten on
low-priority nodes are preempted (the node is lost for a while and its tasks
are requeued). The same seed gives the same sequence of decisions for the same
sequence of requests.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field


@dataclass
class FaultPlan:
    transient: float = 0.0
    throttle: float = 0.0
    preempt: float = 0.0
    seed: int = 0
    retry_after: int = 1          # seconds, sent with 429
    preempt_after: float = 0.5    # a flagged run is cut short after this many seconds
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        for name in ("transient", "throttle", "preempt"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"fault probability {name}={p} is not between 0 and 1")
        # Separate streams so that request faults and preemptions stay
        # reproducible independently of each other.
        self._requests = random.Random(self.seed)
        self._runs = random.Random(self.seed + 1)

    @classmethod
    def parse(cls, text: str | None) -> "FaultPlan":
        """``transient=0.1,throttle=0.05,preempt=0.3,seed=7`` -> FaultPlan."""
        plan = {}
        for part in (text or "").split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in ("transient", "throttle", "preempt", "seed",
                                       "retry_after", "preempt_after"):
                raise ValueError(f"unknown fault setting {part!r}")
            plan[name] = int(value) if name in ("seed", "retry_after") else float(value)
        return cls(**plan)

    @property
    def active(self) -> bool:
        return bool(self.transient or self.throttle or self.preempt)

    def for_request(self) -> str | None:
        """Decide the fate of one request.

        Returns None (serve normally), "throttle", "transient-before" or
        "transient-after".
        """
        if not (self.transient or self.throttle):
            return None
        with self._lock:
            r = self._requests.random()
            if r < self.throttle:
                return "throttle"
            if r < self.throttle + self.transient:
                return "transient-after" if self._requests.random() < 0.5 else "transient-before"
            return None

    def transient_status(self) -> int:
        with self._lock:
            return 503 if self._requests.random() < 0.5 else 500

    def preempts_run(self) -> bool:
        if not self.preempt:
            return False
        with self._lock:
            return self._runs.random() < self.preempt
