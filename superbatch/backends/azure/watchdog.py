"""Watching the pool while the run's tasks wait for nodes.

A job on a pool that never gets nodes is accepted and its tasks wait
forever: the account's core quota is reached, Azure cannot allocate the VMs,
the nodes cannot pull the image (they go `unusable`, and are still billed),
or their start task fails; or the nodes are idle but the job's preparation
task, which brings the shared config to each node, failed there (a node
runs no task of a job whose preparation task failed on it). While tasks are active and none runs, each poll
makes at most one extra request, reading the pool (allocation state, nodes
current vs target, resizeErrors) or, once it has nodes, their states (the
first page of list_nodes with $select: list_pool_node_counts covers the
whole account and pages through every pool). When the pool cannot get a
usable node, the run ends its job and stops with one line: the cause, what
to do, what is left on Azure (billed while it exists) and the command that
removes it.

Sources: "Batch service quotas and limits"
(https://learn.microsoft.com/azure/batch/batch-quota-limit), "Pool and node
errors" (https://learn.microsoft.com/azure/batch/batch-pool-node-error-checking),
PoolResizeErrorCodes of the Batch SDKs.
"""

import time
from contextlib import contextmanager
from typing import Optional

from ...errors import SuperbatchError
from ...progress import format_seconds

QUOTA_PAGE = "https://learn.microsoft.com/azure/batch/batch-quota-limit"

USABLE = {"idle", "running"}
# States a node passes through on its way to being usable.
COMING = {"creating", "starting", "waitingforstarttask", "rebooting", "reimaging", "upgradingos", "preempted"}
BROKEN = {"unusable", "starttaskfailed"}

# How long a pool may stay `deleting` before the run gives up waiting for it.
DELETE_WAIT_LIMIT = 30 * 60


def _value(enum_or_str) -> str:
    return str(getattr(enum_or_str, "value", enum_or_str) or "")


def _first_line(text: Optional[str]) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0].strip() if lines else ""


class Watchdog:
    def __init__(self, batch, settings, run_name: str, job_id: str, options, say):
        self.batch = batch
        self.settings = settings
        self.run_name = run_name
        self.job_id = job_id
        self.options = options
        self.say = say
        self.started: Optional[float] = None  # when tasks began waiting with none running
        self.pool = None  # the latest pool read
        self.nodes_next = False  # alternate pool and node reads once the pool has nodes
        self.phase = ""
        self.takes_over = None  # pool -> whether someone else acts on its resize errors
        self.node_phase = ""  # the nodes' states at the latest node read, e.g. "2 starting"
        self.has_preparation = False  # the job has a preparation task (the config, fetched once per node)
        self.idle_reads = 0  # node reads in a row that found idle nodes while tasks waited

    def poll(self, active: int, running: int) -> str:
        """Called after each poll of the task counts. Returns what the tasks wait
        for (empty when they do not wait), or raises SuperbatchError when the
        pool cannot get a usable node."""
        if running or not active:
            self.started = None  # no request while tasks run
            self.idle_reads = 0
            return ""
        if self.started is None:
            self.started = time.monotonic()
        if self.nodes_next:
            self.nodes_next = False
            self._check_nodes(self.batch.list_node_states())
        else:
            self.pool = self.batch.get_pool(select=POOL_FIELDS)
            self._check_pool(self.pool)
            self.nodes_next = self._node_count(self.pool) > 0
        return self._waiting_line()

    # --- what the reads say ---------------------------------------------------

    def _check_pool(self, pool) -> None:
        if pool is None:
            self._stop("it no longer exists; rerun and the kit creates it again", nodes=0, pool_left=False)
        if _value(pool.state) == "deleting":
            self._stop("it is being deleted; rerun once it is gone and the kit creates it again", nodes=0, pool_left=False)
        allocation = _value(pool.allocation_state)
        if allocation == "resizing":
            self.phase = "allocating"
        else:
            self.phase = (self.node_phase if self._node_count(pool) else "") or allocation
        errors = pool.resize_errors or []
        if allocation == "steady" and errors and self._node_count(pool) == 0:
            if self.takes_over is not None and self.takes_over(pool):
                return  # an elastic pool falls back to dedicated nodes (elastic.py)
            # Steady short of its target with nothing to run on: no more nodes are coming.
            self._stop(resize_cause(errors[0]), nodes=0)

    def _check_nodes(self, nodes: list) -> None:
        states = [_value(node.state) for node in nodes]
        if any(state in USABLE for state in states):
            self.phase = self.node_phase = "nodes ready"
            # Idle nodes and waiting tasks, twice in a row (not a scheduling moment):
            # the job's preparation task may have failed on every node.
            self.idle_reads = self.idle_reads + 1 if "idle" in states else 0
            if self.has_preparation and self.idle_reads >= 2:
                self._check_preparation()
            return
        counted = {}
        for state in states:
            counted[state] = counted.get(state, 0) + 1
        self.phase = self.node_phase = ", ".join(f"{n} {state}" for state, n in sorted(counted.items()))
        steady = self.pool is not None and _value(self.pool.allocation_state) == "steady"
        if steady and not any(state in COMING for state in states) and any(state in BROKEN for state in states):
            broken = [node for node in nodes if _value(node.state) in BROKEN]
            self._stop(node_cause(broken, self.settings.image), nodes=len(nodes))

    def _check_preparation(self) -> None:
        statuses = self.batch.preparation_status(self.job_id)
        infos = [status.job_preparation_task_execution_info for status in statuses]
        failed = [info for info in infos if info is not None and _value(info.state) == "completed" and _value(info.result) == "failure"]
        if not failed or len(failed) < len(infos):
            return  # some node prepared, or is still preparing
        failure = failed[0].failure_info
        cause = f"{failure.code}: {_first_line(failure.message)}" if failure is not None else f"exit code {failed[0].exit_code}"
        self.batch.terminate_job(self.job_id, "superbatch: the job preparation task failed")
        raise SuperbatchError(
            f"job {self.job_id!r} cannot run: its preparation task, which brings the shared config to each node, failed on "
            f"{len(failed)} node{'s' if len(failed) != 1 else ''} ({cause}); check that the run's blob container still holds "
            f"its config and that the storage account lets the nodes read it, then rerun; the job is ended. "
            f"{leftovers(self.settings, self.run_name, self.options, None)}")

    @staticmethod
    def _node_count(pool) -> int:
        return (pool.current_dedicated_nodes or 0) + (pool.current_low_priority_nodes or 0)

    def _waiting_line(self) -> str:
        pool = self.pool
        line = f"waiting for nodes: {pool.current_dedicated_nodes or 0} of {pool.target_dedicated_nodes or 0} dedicated"
        if pool.target_low_priority_nodes or pool.current_low_priority_nodes:
            line += f", {pool.current_low_priority_nodes or 0} of {pool.target_low_priority_nodes or 0} spot"
        return f"{line}, {self.phase}, {format_seconds(time.monotonic() - self.started)}"

    # --- stopping -------------------------------------------------------------

    def _stop(self, cause: str, nodes: int, pool_left: bool = True) -> None:
        # The job is ended so that its tasks do not start (and bill) on nodes
        # that come later, and so that it stops counting against the
        # account's active-job quota; a rerun starts a new job.
        self.batch.terminate_job(self.job_id, "superbatch: the pool cannot get nodes")
        raise SuperbatchError(f"pool {self.settings.pool_id!r} cannot get nodes: {cause}; "
                              f"job {self.job_id!r} is ended. {leftovers(self.settings, self.run_name, self.options, nodes, pool_left)}")


POOL_FIELDS = ["id", "state", "allocationState", "currentDedicatedNodes", "currentLowPriorityNodes",
               "targetDedicatedNodes", "targetLowPriorityNodes", "resizeErrors"]


def resize_cause(error) -> str:
    """The cause and the way out for one of the pool's resizeErrors."""
    code = error.code or ""
    said = f"{code}: {_first_line(error.message)}".rstrip(": ")
    key = code.lower()  # the service sends AllocationTimedout, the SDKs name it AllocationTimedOut
    if key in ("accountcorequotareached", "accountlowprioritycorequotareached", "accountspotcorequotareached"):
        kind = "dedicated" if key == "accountcorequotareached" else "low-priority/spot"
        return (f"the Batch account's {kind} core quota is reached ({said}); request more in the Azure portal: "
                f"Batch account > Quotas ({QUOTA_PAGE})")
    if key == "allocationfailed":
        return f"Azure could not allocate its nodes ({said}); try another --vm-size or region, or rerun later"
    if key == "allocationtimedout":
        return f"its nodes were not allocated within the resize timeout ({said}); try another --vm-size or region, or rerun later"
    return f"the pool's resize failed ({said})"


def node_cause(broken: list, image: str) -> str:
    """The cause and the way out for nodes that are unusable or whose start task failed."""
    n = len(broken)
    nodes = f"{n} node" + ("s" if n != 1 else "")
    if all(_value(node.state) == "starttaskfailed" for node in broken):
        return f"its {nodes} failed their start task; fix the pool's start task or choose another --pool-id"
    for node in broken:
        for error in node.errors or []:
            details = {pair.name: pair.value for pair in error.error_details or []}
            named = details.get("ContainerImage") or _image_in(error.message, image)
            if named or "image" in (error.code or "").lower() or "registry" in (error.code or "").lower():
                said = f"{error.code}: {_first_line(error.message)}".rstrip(": ")
                return (f"its {nodes} are unusable: the image {named or image} could not be pulled ({said}); "
                        f"was it pushed (--push)? is the registry login right (REGISTRY_SERVER, REGISTRY_USERNAME, REGISTRY_PASSWORD)?")
    first = next((error for node in broken for error in node.errors or []), None)
    said = f" ({first.code}: {_first_line(first.message)})" if first is not None else ""
    return f"its {nodes} are unusable{said}; see the nodes' errors in the Azure portal"


def _image_in(message: Optional[str], image: str) -> str:
    return image if image and image in (message or "") else ""


@contextmanager
def naming_leftovers(settings, run_name: str, options, pool_left: bool = True):
    """A quota that refuses the pool or the job ends the run: its line also says what the run leaves behind."""
    try:
        yield
    except SuperbatchError as error:
        if getattr(error, "code", "") not in ("PoolQuotaReached", "ActiveJobAndScheduleQuotaReached"):
            raise
        raise SuperbatchError(f"{error}. {leftovers(settings, run_name, options, None, pool_left)}") from None


def leftovers(settings, run_name: str, options, nodes: Optional[int], pool_left: bool = True) -> str:
    """What the run leaves on Azure, and the command that removes it."""
    command = ["python controller.py --run", run_name, "--backend azure --pool-id", settings.pool_id]
    if getattr(options, "container", None):
        command += ["--container", settings.container]
    command.append("--cancel")
    if pool_left:
        if nodes is None:
            count = "its nodes billed while they exist"
        else:
            count = f"{nodes} node{'s' if nodes != 1 else ''}, " + ("billed while they exist" if nodes else "none billed yet")
        what = f"pool {settings.pool_id!r} ({count}) and blob container {settings.container!r} (the run's inputs)"
        command.append("--delete-pool")
    else:
        what = f"blob container {settings.container!r} (the run's inputs)"
    command.append("--delete-container")
    return f"Left on Azure: {what}; remove with: {' '.join(command)}"


# --- a pool being deleted when the run starts ---------------------------------

def wait_until_gone(batch, settings, say, poll_interval: float) -> bool:
    """Wait while the pool is `deleting` (its id stays taken until it is gone);
    returns whether the pool exists then."""
    started = time.monotonic()
    last_said = None
    while True:
        pool = batch.get_pool(select=["state"])
        if pool is None or _value(pool.state) != "deleting":
            return pool is not None
        waited = time.monotonic() - started
        if waited > DELETE_WAIT_LIMIT:
            raise SuperbatchError(f"pool {settings.pool_id!r} is still being deleted after {format_seconds(waited)}; "
                                  f"rerun later, or choose another --pool-id")
        if last_said is None or time.monotonic() - last_said >= 30:
            last_said = time.monotonic()
            say(f"pool {settings.pool_id} is being deleted; waiting until it is gone to create it again ({format_seconds(waited)})")
        time.sleep(poll_interval)


def create_pool(batch, settings, say, poll_interval: float) -> bool:
    """Create the pool, waiting out a deletion of the same id; returns whether this call created it."""
    for _ in range(3):
        try:
            return batch.create_pool()
        except SuperbatchError as error:
            if getattr(error, "code", "") != "PoolBeingDeleted":
                raise
            if wait_until_gone(batch, settings, say, poll_interval):
                return False  # someone else created it meanwhile
    return batch.create_pool()
