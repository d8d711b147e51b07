"""Elastic pools: an autoscale formula sized by the tasks, a fast start, and
a fallback from spot to dedicated nodes.

The formula lives in the pool, so the pool keeps growing to the work and
draining to zero nodes when the controller is gone (a closed laptop). What
the controller adds while it runs: it enables the formula right after adding
tasks, which starts the evaluation schedule at that moment, and enables it
again now and then while tasks wait and the pool wants no node (its samples
did not show the tasks yet) rather than waiting out a 5-minute interval; and
it switches the formula to dedicated nodes when spot nodes cannot be had or
are preempted too often.

The task counts a formula reads ($PendingTasks, $ActiveTasks, $RunningTasks)
are the pool's, over every job on it: a pool shared by several runs grows to
their work together.

Only pools the kit made elastic are ever changed: such a pool carries the
metadata item superbatch=elastic from its creation. A user's own pool (no such
item) and a --fixed-pool pool (superbatch=fixed) are never resized or changed.
"""

from datetime import datetime, timedelta, timezone
from typing import Optional

from azure.batch import models

from .clients import error_code

METADATA_KEY = "superbatch"
# The service's shortest evaluation interval: the pool drains within 5 minutes of its last task.
INTERVAL = timedelta(minutes=5)
# The service takes one enable per pool every 30 seconds (FACTS.md, "Autoscale") and
# refuses the others with TooManyEnableAutoScaleRequests; the kit asks at most at each
# read of the pool (READ_EVERY polls: 30 s at the default poll interval) and takes a
# refusal as "later".
FAST_START_TRIES = 4  # enough to allocate within about a minute, then the schedule takes over
# Resize errors that mean spot (low-priority) nodes cannot be had now. PoolResizeErrorCodes
# in the REST description; AllocationFailed/Timedout do not say which kind, so they count
# only while the pool is short of its spot target.
SPOT_QUOTA_CODES = {"AccountLowPriorityCoreQuotaReached", "AccountSpotCoreQuotaReached"}
ALLOCATION_CODES = {"AllocationFailed", "AllocationTimedout", "AllocationTimedOut"}
PREEMPTED_SHARE = 0.5  # more than half the spot nodes seen were preempted: go dedicated


def formula(dedicated: int, spot: int) -> str:
    """Spot nodes first (up to `spot`), dedicated ones for the rest (up to
    `dedicated`), one node per $TaskSlotsPerNode waiting or running tasks;
    zero nodes when there is none. taskcompletion: no running task is cut
    short when the pool shrinks."""
    return (
        "// superbatch: grow to the waiting and running tasks, drain to zero when there are none\n"
        "$tasks = max(0, $PendingTasks.GetSample(1));\n"
        "$nodes = ceil($tasks / $TaskSlotsPerNode);\n"
        f"$TargetLowPriorityNodes = min({spot}, $nodes);\n"
        f"$TargetDedicatedNodes = min({dedicated}, max(0, $nodes - {spot}));\n"
        "$NodeDeallocationOption = taskcompletion;"
    )


def pool_options(settings, fixed: bool) -> dict:
    """The sizing part of a new pool: fixed targets, or the formula."""
    if fixed:
        return dict(target_dedicated_nodes=settings.dedicated_nodes, target_low_priority_nodes=settings.spot_nodes,
                    metadata=[models.BatchMetadataItem(name=METADATA_KEY, value="fixed")])
    # An elastic pool starts empty and without autoscale: the formula is enabled
    # once the tasks are there (Elastic.kick), which starts its evaluation
    # schedule at that moment. A controller that dies before leaves a pool of
    # zero nodes, which costs nothing; the rerun enables it.
    return dict(target_dedicated_nodes=0, target_low_priority_nodes=0,
                metadata=[models.BatchMetadataItem(name=METADATA_KEY, value="elastic")])


def pool_mode(pool) -> Optional[str]:
    """"elastic" or "fixed" for a pool the kit made, None for a user's own pool."""
    for item in pool.metadata or []:
        if item.name == METADATA_KEY:
            return item.value
    return None


class Elastic:
    """The controller's part in an elastic pool while a run is followed."""

    def __init__(self, client, settings, state: dict, say):
        self.client, self.settings, self.state, self.say = client, settings, state, say
        self.kicks = 0
        self.wanted_formula: Optional[str] = None  # a formula the service has not taken yet (30 s rule)

    @property
    def fallback(self) -> Optional[dict]:
        return self.state.get("fallback")

    def current_formula(self) -> str:
        if self.fallback:
            return formula(self.settings.dedicated_nodes, 0)
        return formula(self.settings.dedicated_nodes, self.settings.spot_nodes)

    def kick(self) -> bool:
        """Enable autoscale (again) with the formula and interval: the service
        stops the old schedule, if any, starts one from this request and
        evaluates now (autoScaleEvaluationInterval, Batch REST API:
        https://learn.microsoft.com/en-us/javascript/api/@azure-rest/batch/batchpoolenableautoscaleoptions)."""
        options = models.BatchPoolEnableAutoScaleOptions(auto_scale_formula=self.wanted_formula or self.current_formula(),
                                                          auto_scale_evaluation_interval=INTERVAL)
        try:
            self.client.enable_pool_auto_scale(self.settings.pool_id, options)
        except Exception as error:
            if error_code(error) == "TooManyEnableAutoScaleRequests":
                return False  # the service had one less than 30 s ago; the next watch tries again
            raise
        self.kicks, self.wanted_formula = self.kicks + 1, None
        return True

    def watch(self, pool, nodes: list, waiting: int, preempted_spot: int, spot_seen: int) -> None:
        """Called now and then with the pool and its nodes: start again a
        schedule that saw no task yet, and fall back to dedicated nodes."""
        if self.wanted_formula:
            self.kick()
        if not self.fallback:
            reason = self._spot_trouble(pool, preempted_spot, spot_seen)
            if reason and self.settings.dedicated_nodes > 0:
                self.state["fallback"] = {"from": "spot", "to": "dedicated", "reason": reason,
                                          "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
                self.say(f"spot nodes: {reason}; dedicated nodes take over (up to {self.settings.dedicated_nodes})")
                self.wanted_formula = self.current_formula()
                self.kick()
                return
        nodes_wanted = (pool.target_dedicated_nodes or 0) + (pool.target_low_priority_nodes or 0)
        if waiting and not nodes_wanted and not nodes and self.kicks < FAST_START_TRIES:
            # The evaluation ran before the service's task samples showed the
            # tasks (they are taken every 30 s): evaluate again.
            self.kick()

    def takes_over(self, pool) -> bool:
        """Whether these resize errors are the fallback's to act on (spot nodes
        that cannot be had while dedicated ones may be), rather than a reason
        to stop the run (watchdog.py). Falls back now if it has not yet."""
        if not self.settings.spot_nodes or not self.settings.dedicated_nodes:
            return False
        spot_errors = [error for error in pool.resize_errors or [] if error.code in SPOT_QUOTA_CODES]
        if self.fallback:
            # Errors left from before the switch, until the pool evaluates the new formula.
            return bool(spot_errors) and ((pool.target_low_priority_nodes or 0) > 0 or bool(self.wanted_formula))
        if self._spot_trouble(pool, 0, 0):
            self.watch(pool, [], 0, 0, 0)
            return bool(self.fallback)
        return False

    def _spot_trouble(self, pool, preempted_spot: int, spot_seen: int) -> Optional[str]:
        if not self.settings.spot_nodes:
            return None
        short = (pool.current_low_priority_nodes or 0) < (pool.target_low_priority_nodes or 0)
        for error in pool.resize_errors or []:
            if error.code in SPOT_QUOTA_CODES or (short and error.code in ALLOCATION_CODES):
                return f"{error.code} ({error.message})" if error.message else error.code
        if spot_seen and preempted_spot > PREEMPTED_SHARE * spot_seen:
            return f"{preempted_spot} preemptions among {spot_seen} spot nodes"
        return None


POOL_FIELDS = ["id", "metadata", "vmSize", "taskSlotsPerNode", "enableAutoScale", "targetDedicatedNodes",
               "targetLowPriorityNodes", "currentDedicatedNodes", "currentLowPriorityNodes", "resizeErrors"]
NODE_FIELDS = ["id", "isDedicated", "allocationTime", "state", "stateTransitionTime"]
READ_EVERY = 6  # polls between two reads of the pool and its nodes (30 s at the default 5 s poll)


class PoolWatch:
    """The pool while a run is followed: its nodes read every few polls for
    the cost (cost.NodeLedger), and the elastic pool's fast start and fallback."""

    def __init__(self, client, settings, state: dict, say):
        from .cost import NodeLedger, now

        self.client, self.settings, self.state, self.say = client, settings, state, say
        pool = client.get_pool(settings.pool_id, select=POOL_FIELDS)
        self.mode = pool_mode(pool)
        self.vm_size = pool.vm_size or settings.vm_size
        self.elastic = Elastic(client, settings, state, say) if self.mode == "elastic" else None
        start = state.get("cost_from")
        self.ledger = NodeLedger(datetime.fromisoformat(start) if start else now())
        self.ledger.slots = pool.task_slots_per_node or 1
        self.polls = 0
        self.pool = pool

    def started(self) -> None:
        """Tasks were added: start the pool now."""
        if self.elastic:
            self.elastic.kick()

    def takes_over(self, pool) -> bool:
        return self.elastic is not None and self.elastic.takes_over(pool)

    def tick(self, waiting: int) -> None:
        self.polls += 1
        if self.polls % READ_EVERY == 1:
            self.read(waiting)

    def read(self, waiting: int = 0) -> None:
        from .cost import now

        self.pool = self.client.get_pool(self.settings.pool_id, select=POOL_FIELDS)
        nodes = list(self.client.list_nodes(self.settings.pool_id, select=NODE_FIELDS))
        self.ledger.observe(nodes, now())
        if self.elastic:
            self.elastic.watch(self.pool, nodes, waiting, *self.ledger.spot_counts())

    def report(self) -> dict:
        """The cost block, with a last read of the nodes; says it in one line, and what the pool keeps."""
        from .cost import now, price, region_of

        self.read()
        block = self.ledger.block(now(), price(self.vm_size, region_of(self.settings.batch_endpoint),
                                               self.settings.price_per_node_hour, self.say))
        money = f", about {block['estimated_cost']} {block['currency'] or ''}".rstrip() if block["estimated_cost"] is not None else ""
        utilization = f" (utilization {block['utilization']:.0%})" if block["utilization"] is not None else ""
        idle = f", {block['idle_node_minutes']} idle node-minutes after the last task" if block["idle_node_minutes"] is not None else ""
        self.say(f"cost: {block['node_hours_dedicated']} dedicated and {block['node_hours_spot']} spot node-hours, "
                 f"{block['task_hours']} task-hours{utilization}, {block['preemptions']} preemptions{idle}{money}")
        left = (self.pool.current_dedicated_nodes or 0) + (self.pool.current_low_priority_nodes or 0)
        if left and self.mode == "elastic":
            self.say(f"pool {self.settings.pool_id}: {left} nodes left; they leave within {INTERVAL.seconds // 60} minutes (elastic pool)")
        elif left:
            self.say(f"pool {self.settings.pool_id}: {left} nodes stay allocated, and billed, until the pool is resized or deleted (--delete-pool)")
        return block
