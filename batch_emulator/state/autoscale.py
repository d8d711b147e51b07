"""Autoscale on pools: enable, disable, evaluate, and the evaluation schedule.

Rules and their sources:
- Pools_EnablePoolAutoScale (REST description, api 2025-06-01): refused while
  a resize is in progress; a formula is required when autoscale is off; at
  least one of formula and interval when it is on; an interval from 5 minutes
  to 168 hours (else InvalidPropertyValue, 400); "If you specify a new
  interval, then the existing autoscale evaluation schedule will be stopped
  and a new autoscale evaluation schedule will be started, with its starting
  time being the time when this request was issued" (the emulator evaluates
  at that start, then every interval); "You cannot call this API for the same
  Pool more than once every 30 seconds" (code TooManyEnableAutoScaleRequests,
  BatchErrorCodeStrings of the .NET SDK; its AutoScaleIntegrationTests shows
  the first enable right after creating the pool is accepted, the second
  refused).
- A formula longer than 8 KB: AutoScaleFormulaTooLong; a syntax error:
  AutoScalingFormulaSyntaxError (both BatchErrorCodeStrings).
- Pools_ResizePool: "You cannot resize Pools which are configured for
  automatic scaling ... the Batch service returns an error 409".
- Pools_EvaluatePoolAutoScale: the pool must have autoscale enabled; the
  result is not applied.
- An evaluation resizes the pool only when its targets change (the service
  keeps a pool's last resize error until the next resize; nextflow-io/
  nextflow#7312), with the formula's $NodeDeallocationOption.

Time: ``self.autoscale_scale`` real seconds per service second (1.0 unless
``--autoscale-interval`` shortens it, see server.py and the README).
"""

from __future__ import annotations

import time

from .. import autoscale, exceptions as exc, schemas
from ..autoscale.samples import SAMPLE_PERIOD
from .common import duration_seconds, iso, now_us

DEFAULT_INTERVAL = 15 * 60          # seconds (REST description)
MIN_INTERVAL, MAX_INTERVAL = 5 * 60, 168 * 3600
ENABLE_SPACING = 30.0               # service seconds between two enables of one pool
SERVICE_INTERVAL = 300.0            # the service's shortest interval, what --autoscale-interval stands for

ENABLE = schemas.Obj({"autoScaleFormula": schemas.Str(), "autoScaleEvaluationInterval": schemas.Duration()})
EVALUATE = schemas.Obj({"autoScaleFormula": schemas.Str()}, required=("autoScaleFormula",))


class PoolAutoscale:
    """A pool's autoscale run-time state (its settings live in pool.spec)."""
    __slots__ = ("history", "run", "token", "last_enable")

    def __init__(self, scale: float):
        self.history = autoscale.History(scale)
        self.run = None          # the last evaluation's autoScaleRun
        self.token = None        # the current schedule; a new one makes old timers stop
        self.last_enable = None  # monotonic time of the last accepted enable


def format_interval(seconds: float) -> str:
    """An ISO 8601 duration as the service returns it ("PT06M00S" comes back "PT6M")."""
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    text = "P" + (f"{days}D" if days else "")
    if h or m or s or not days:
        text += "T" + (f"{h}H" if h else "") + (f"{m}M" if m else "") + (f"{s}S" if s or not (h or m) else "")
    return text


def check_interval(text: str | None) -> float:
    seconds = DEFAULT_INTERVAL if text is None else duration_seconds(text)
    if seconds is None or not MIN_INTERVAL <= seconds <= MAX_INTERVAL:
        raise schemas._invalid("autoScaleEvaluationInterval", text,
                               "The value must be between 5 minutes and 168 hours.")
    return seconds


def check_formula(formula: str | None) -> str:
    if not formula:
        raise exc.MissingRequiredProperty(values={"PropertyName": "autoScaleFormula"})
    if len(formula) > autoscale.MAX_FORMULA_LENGTH:
        raise exc.AutoScaleFormulaTooLong()
    try:
        autoscale.grammar.parse(formula)
    except autoscale.FormulaSyntaxError as e:
        raise exc.AutoScalingFormulaSyntaxError(values={"Message": str(e)}) from None
    return formula


class AutoscaleMixin:
    """Autoscale operations of BatchBackend."""

    autoscale_scale = 1.0

    # -- the operations --

    def _autoscale_on_create(self, pool, spec) -> None:
        """Called by create_pool: a pool created with enableAutoScale."""
        pool.autoscale = None
        if not spec.get("enableAutoScale"):
            return
        for name in ("targetDedicatedNodes", "targetLowPriorityNodes"):
            if name in spec:   # REST description: "must not be specified if enableAutoScale is set to true"
                raise schemas._invalid(name, spec[name], "Must not be specified when enableAutoScale is true.")
        check_formula(spec.get("autoScaleFormula"))
        spec["autoScaleEvaluationInterval"] = format_interval(check_interval(spec.get("autoScaleEvaluationInterval")))
        pool.autoscale = PoolAutoscale(self.autoscale_scale)

    def _autoscale_start(self, pool) -> None:
        """Called once the pool exists: evaluate now, then every interval."""
        if pool.autoscale is not None:
            self._autoscale_schedule(pool, evaluate_now=True)

    def enable_autoscale(self, pool_id: str, body) -> None:
        spec = schemas.validate(ENABLE, body or {})
        with self.lock:
            pool = self._pool(pool_id)
            if pool.state == "deleting":
                raise exc.PoolBeingDeleted()
            enabled = bool(pool.spec.get("enableAutoScale"))
            formula, interval = spec.get("autoScaleFormula"), spec.get("autoScaleEvaluationInterval")
            if not enabled and pool.alloc_state != "steady":
                raise exc.PoolBeingResized()
            if enabled and formula is None and interval is None:
                raise exc.MissingRequiredProperty(values={"PropertyName": "autoScaleFormula"})
            if formula is not None or not enabled:
                check_formula(formula)
            seconds = check_interval(interval) if (interval is not None or not enabled) else None
            state = getattr(pool, "autoscale", None) or PoolAutoscale(self.autoscale_scale)
            now = time.monotonic()
            if state.last_enable is not None and now - state.last_enable < ENABLE_SPACING * self.autoscale_scale:
                raise exc.TooManyEnableAutoScaleRequests()
            state.last_enable = now
            pool.autoscale = state
            pool.spec["enableAutoScale"] = True
            if formula is not None:
                pool.spec["autoScaleFormula"] = formula
            if seconds is not None:
                pool.spec["autoScaleEvaluationInterval"] = format_interval(seconds)
            pool.touch(now_us())
            if seconds is not None:   # a new schedule, starting now
                self._autoscale_schedule(pool, evaluate_now=True)

    def disable_autoscale(self, pool_id: str) -> None:
        with self.lock:
            pool = self._pool(pool_id)
            if pool.state == "deleting":
                raise exc.PoolBeingDeleted()
            for key in ("autoScaleFormula", "autoScaleEvaluationInterval"):
                pool.spec.pop(key, None)
            pool.spec["enableAutoScale"] = False
            state = getattr(pool, "autoscale", None)
            if state is not None:   # keeps last_enable: the 30 s rule is per pool
                state.token, state.run = None, None
            pool.touch(now_us())

    def evaluate_autoscale(self, pool_id: str, body) -> dict:
        spec = schemas.validate(EVALUATE, body or {})
        with self.lock:
            pool = self._pool(pool_id)
            state = getattr(pool, "autoscale", None)
            if not pool.spec.get("enableAutoScale") or state is None:
                raise exc.AutoScaleNotEnabled()
            check_formula(spec["autoScaleFormula"])
            self._autoscale_sample(pool)
            outcome = self._autoscale_evaluate(pool, spec["autoScaleFormula"])
            return self._autoscale_run(outcome)

    # -- the schedule --

    def _autoscale_schedule(self, pool, evaluate_now: bool) -> None:
        state = pool.autoscale
        token = state.token = object()
        if evaluate_now:
            self.clock.after(0.0, self._autoscale_tick, pool, token)
        else:
            self.clock.after(self._autoscale_period(pool), self._autoscale_tick, pool, token)
        self.clock.after(state.history.real_period, self._autoscale_sampler, pool, token)

    def _autoscale_period(self, pool) -> float:
        seconds = duration_seconds(pool.spec.get("autoScaleEvaluationInterval")) or DEFAULT_INTERVAL
        return seconds * self.autoscale_scale

    def _autoscale_live(self, pool, token) -> bool:
        state = getattr(pool, "autoscale", None)
        return (not self._closed and state is not None and state.token is token
                and self.pools.get(pool.key) is pool and pool.state != "deleting")

    def _autoscale_sampler(self, pool, token) -> None:
        with self.lock:
            if not self._autoscale_live(pool, token):
                return
            self._autoscale_sample(pool)
            period = pool.autoscale.history.real_period
        self.clock.after(period, self._autoscale_sampler, pool, token)

    def _autoscale_tick(self, pool, token) -> None:
        with self.lock:
            if not self._autoscale_live(pool, token):
                return
            self._autoscale_sample(pool)
            outcome = self._autoscale_evaluate(pool, pool.spec.get("autoScaleFormula", ""))
            pool.autoscale.run = self._autoscale_run(outcome)
            if outcome.error is None:
                self._autoscale_apply(pool, outcome)
            period = self._autoscale_period(pool)
        self.clock.after(period, self._autoscale_tick, pool, token)

    def _autoscale_apply(self, pool, outcome) -> None:
        if (outcome.dedicated, outcome.low_priority) == (pool.target_dedicated, pool.target_low):
            return
        pool.target_dedicated, pool.target_low = outcome.dedicated, outcome.low_priority
        pool.resize_errors = []
        self._reconcile_nodes(pool, outcome.deallocation)

    # -- samples and evaluation --

    def _autoscale_sample(self, pool) -> None:
        history = pool.autoscale.history
        if history.due():
            history.add(self._pool_metrics(pool))

    def _pool_metrics(self, pool) -> dict:
        counts = {"active": 0, "running": 0, "succeeded": 0, "failed": 0}
        for job in self.jobs.values():
            if job.pool_key == pool.key and job.state not in ("deleting",):
                for k in counts:
                    counts[k] += job.counts.get(k, 0)
        nodes = list(pool.nodes.values())
        usable = [n for n in nodes if n.state in ("idle", "running") and not n.removing]
        slots = sum(n.slots for n in usable)
        return {
            "$ActiveTasks": float(counts["active"]), "$RunningTasks": float(counts["running"]),
            "$PendingTasks": float(counts["active"] + counts["running"]),
            "$SucceededTasks": float(counts["succeeded"]), "$FailedTasks": float(counts["failed"]),
            "$CurrentDedicatedNodes": float(sum(1 for n in nodes if n.dedicated)),
            "$CurrentLowPriorityNodes": float(sum(1 for n in nodes if not n.dedicated)),
            "$PreemptedNodeCount": float(sum(1 for n in nodes if n.state == "preempted")),
            "$UsableNodeCount": float(len(usable)), "$SampleNodeCount": float(len(nodes)),
            # No VM to measure: busy slots stand in for CPU; the byte and I/O counters stay 0.
            "$CPUPercent": 100.0 * sum(n.used for n in usable) / slots if slots else 0.0,
            "$WallClockSeconds": SAMPLE_PERIOD * len(usable),
        }

    def _autoscale_evaluate(self, pool, formula: str):
        return autoscale.evaluate(formula, history=pool.autoscale.history, dedicated=pool.target_dedicated,
                                  low_priority=pool.target_low, slots_per_node=pool.slots)

    @staticmethod
    def _autoscale_run(outcome) -> dict:
        run = {"timestamp": iso(now_us()), "results": outcome.results}
        if outcome.error is not None:   # shape: the REST reference's AutoScaleRun example
            run["error"] = {"code": outcome.error.code, "message": outcome.error.message,
                            "values": [{"name": "Message", "value": outcome.error.value()}]}
        return run

    def autoscale_json(self, pool) -> dict:
        """The pool's autoscale fields, in the order of recorded GetPool answers."""
        if not pool.spec.get("enableAutoScale"):
            return {"enableAutoScale": False}
        out = {"enableAutoScale": True, "autoScaleFormula": pool.spec.get("autoScaleFormula"),
               "autoScaleEvaluationInterval": pool.spec.get("autoScaleEvaluationInterval")}
        state = getattr(pool, "autoscale", None)
        if state is not None and state.run is not None:
            out["autoScaleRun"] = state.run
        return out

    def _autoscale_restore(self, pool) -> None:
        """A pool rebuilt from a state file: its schedule starts again."""
        pool.autoscale = None
        if pool.spec.get("enableAutoScale"):
            pool.autoscale = PoolAutoscale(self.autoscale_scale)
            self._autoscale_schedule(pool, evaluate_now=True)
