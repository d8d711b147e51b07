"""Pools and their nodes: creation, resizing, node start-up and removal, and
how the service shows them.
"""

from __future__ import annotations

import itertools
import shutil
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from .. import exceptions as exc
from .. import schemas
from ..containers import ImageCache
from .jobprep import PrepRun
from .common import DEFAULT_RESIZE_TIMEOUT, DEFAULT_USER_IDENTITY, iso, new_etag, now_us


class Pool:
    __slots__ = ("id", "key", "seq", "spec", "state", "state_time", "alloc_state", "alloc_time",
                 "creation", "modified", "etag", "nodes", "target_dedicated", "target_low",
                 "slots", "fill_pack", "node_seq", "resize_errors", "dir",
                 "alloc_pending", "timed_out_kinds", "autoscale")

    def touch(self, us):
        self.modified, self.etag = us, new_etag()


class Node:
    __slots__ = ("id", "pool", "dedicated", "state", "state_time", "alloc_time", "boot_time",
                 "slots", "used", "runs", "total_run", "total_succeeded", "ip", "executor",
                 "removing", "dir", "index", "images", "errors")

    @property
    def free(self) -> int:
        return self.slots - self.used

    @property
    def schedulable(self) -> bool:
        return self.state in ("idle", "running") and not self.removing


POOL_FIELDS = {
    "id": lambda p: p.id,
    "displayName": lambda p: p.spec.get("displayName"),
    "state": lambda p: p.state,
    "allocationState": lambda p: p.alloc_state,
    "vmSize": lambda p: p.spec["vmSize"],
    "stateTransitionTime": lambda p: p.state_time,
    "creationTime": lambda p: p.creation,
    "lastModified": lambda p: p.modified,
    "currentDedicatedNodes": lambda p: sum(1 for n in p.nodes.values() if n.dedicated),
    "currentLowPriorityNodes": lambda p: sum(1 for n in p.nodes.values() if not n.dedicated),
}


NODE_FIELDS = {
    "id": lambda n: n.id,
    "state": lambda n: n.state,
    "schedulingState": lambda n: "enabled",
    "isDedicated": lambda n: n.dedicated,
    "stateTransitionTime": lambda n: n.state_time,
    "allocationTime": lambda n: n.alloc_time,
    "totalTasksRun": lambda n: n.total_run,
    "runningTasksCount": lambda n: len(n.runs),
}


class PoolsMixin:
    """Pool and node operations of BatchBackend."""

    def create_pool(self, body) -> Pool:
        spec = schemas.validate(schemas.POOL_CREATE, body)
        us = now_us()
        with self.lock:
            key = spec["id"].lower()
            if key in self.pools:
                # A pool being deleted keeps its id until it is gone.
                raise exc.PoolBeingDeleted() if self.pools[key].state == "deleting" else exc.PoolExists()
            self._check_pool_quota()
            pool = Pool()
            self._autoscale_on_create(pool, spec)   # refuses a bad formula or interval (state/autoscale.py)
            pool.id, pool.key, pool.seq, pool.spec = spec["id"], key, next(self._seq), spec
            pool.state, pool.state_time = "active", us
            pool.alloc_state, pool.alloc_time = "steady", us
            pool.creation = us
            pool.touch(us)
            pool.nodes = {}
            pool.target_dedicated = spec.get("targetDedicatedNodes", 0)
            pool.target_low = spec.get("targetLowPriorityNodes", 0)
            pool.slots = spec.get("taskSlotsPerNode", 1)
            pool.fill_pack = spec.get("taskSchedulingPolicy", {}).get("nodeFillType") == "pack"
            pool.node_seq = itertools.count(1)
            pool.resize_errors, pool.alloc_pending = [], None
            pool.dir = self.workdir / "pools" / f"{key}-{pool.seq}"
            self.pools[key] = pool
            self._reconcile_nodes(pool, "requeue")
            self._autoscale_start(pool)
            return pool

    def get_pool(self, pool_id: str) -> Pool:
        with self.lock:
            return self._pool(pool_id)

    def list_pools(self):
        with self.lock:
            return list(self.pools.values())

    def delete_pool(self, pool_id: str) -> None:
        with self.lock:
            pool = self._pool(pool_id)
            if pool.state == "deleting":
                raise exc.PoolBeingDeleted()
            pool.state, pool.state_time = "deleting", now_us()
            pool.touch(pool.state_time)
            for node in list(pool.nodes.values()):
                self._remove_node(pool, node, "requeue")
            self._update_allocation(pool)
            if self.delete_delay <= 0:
                self._pool_gone(pool)   # no delay asked: gone before the answer
                return
        # The service keeps the pool in `deleting` while it releases the VMs
        # (BatchPoolState in the REST description; the SDK's delete poller
        # waits on it), so the same id stays taken until then.
        self.clock.after(self.delete_delay, self._pool_gone, pool)

    def _pool_gone(self, pool: Pool) -> None:
        with self.lock:
            if self.pools.get(pool.key) is pool:
                del self.pools[pool.key]
        threading.Thread(target=shutil.rmtree, args=(pool.dir, True), daemon=True).start()

    def resize_pool(self, pool_id: str, body) -> None:
        spec = schemas.validate(schemas.POOL_RESIZE, body or {})
        with self.lock:
            pool = self._pool(pool_id)
            if pool.state == "deleting":
                raise exc.PoolBeingDeleted()
            if pool.spec.get("enableAutoScale"):
                raise exc.PoolAutoScaleEnabled()
            if pool.alloc_state != "steady":
                raise exc.PoolNotSteady()
            if "targetDedicatedNodes" in spec:
                pool.target_dedicated = spec["targetDedicatedNodes"]
            if "targetLowPriorityNodes" in spec:
                pool.target_low = spec["targetLowPriorityNodes"]
            # resizeErrors and resizeTimeout describe the most recent resize.
            pool.resize_errors = []
            pool.spec["resizeTimeout"] = spec.get("resizeTimeout", DEFAULT_RESIZE_TIMEOUT)
            pool.touch(now_us())
            self._reconcile_nodes(pool, spec.get("nodeDeallocationOption", "requeue"))

    def list_nodes(self, pool_id: str):
        with self.lock:
            return list(self._pool(pool_id).nodes.values())

    def get_node(self, pool_id: str, node_id: str) -> Node:
        with self.lock:
            node = self._pool(pool_id).nodes.get(node_id)
            if node is None:
                raise exc.NodeNotFound()
            return node

    def _reconcile_nodes(self, pool: Pool, deallocation: str) -> None:
        """Add or remove nodes until the pool matches its targets."""
        for dedicated, target in ((True, pool.target_dedicated), (False, pool.target_low)):
            nodes = [n for n in pool.nodes.values() if n.dedicated == dedicated and not n.removing]
            for _ in range(self._nodes_to_allocate(pool, dedicated, target - len(nodes))):
                self._add_node(pool, dedicated)
            if len(nodes) > target:
                # Idle and still-starting nodes go first, then the least busy.
                victims = sorted(nodes, key=lambda n: (n.state not in ("creating", "starting", "idle"),
                                                       n.used, -n.index))
                for node in victims[: len(nodes) - target]:
                    self._remove_node(pool, node, deallocation)
        self._update_allocation(pool)

    def _add_node(self, pool: Pool, dedicated: bool) -> None:
        us = now_us()
        node = Node()
        node.index = next(pool.node_seq)
        node.id = f"tvmps_{uuid.uuid4().hex}{uuid.uuid4().hex}_{'d' if dedicated else 'p'}"
        node.pool, node.dedicated = pool, dedicated
        node.state, node.state_time, node.alloc_time, node.boot_time = "creating", us, us, None
        node.slots, node.used, node.runs = pool.slots, 0, {}
        node.total_run = node.total_succeeded = 0
        node.ip = f"10.0.{node.index // 250}.{node.index % 250 + 4}"
        node.removing = False
        node.dir = pool.dir / node.id
        node.images, node.errors = ImageCache(), []   # what it pulled; why it is unusable
        # One worker thread per task slot: a slot is a thread, nothing more.
        node.executor = ThreadPoolExecutor(max_workers=node.slots, thread_name_prefix=f"node{node.index}")
        pool.nodes[node.id] = node
        self._node_lifetime(node, allocated=us)
        self.clock.after(self.node_startup_delay, self._node_booted, node)

    def _node_booted(self, node: Node) -> None:
        with self.lock:
            if node.pool.nodes.get(node.id) is not node or node.state != "creating":
                return
            self._set_node_state(node, "starting")
        config = node.pool.spec["virtualMachineConfiguration"].get("containerConfiguration") or {}
        images = config.get("containerImageNames") or []
        if images and self.runner.docker is not None:
            node.executor.submit(self._prefetch_then_idle, node, images, config.get("containerRegistries") or [])
        else:
            self._node_ready(node)

    def _prefetch_then_idle(self, node, images, registries):
        errors = self.runner.prefetch(images, registries, node.images)
        if not errors:
            self._node_ready(node)
            return
        # A node that cannot pull a pool's container image reports it in its
        # errors and goes unusable; Batch does not recover it, it stays in the
        # pool (and billed) and runs no task. Source: "Pool and node errors",
        # learn.microsoft.com/azure/batch/batch-pool-node-error-checking
        with self.lock:
            if node.pool.nodes.get(node.id) is not node or node.state != "starting":
                return
            node.errors = errors
            if node.boot_time is None:   # the VM did boot; the pull came after
                node.boot_time = now_us()
            self._set_node_state(node, "unusable")
            self._update_allocation(node.pool)

    def _node_ready(self, node: Node) -> None:
        with self.lock:
            if node.pool.nodes.get(node.id) is not node or node.state not in ("starting", "preempted"):
                return
            if node.boot_time is None:
                node.boot_time = now_us()
            self._set_node_state(node, "running" if node.runs else "idle")
            self._update_allocation(node.pool)
            self._schedule(node.pool)

    def _set_node_state(self, node: Node, state: str) -> None:
        if node.state != state:
            node.state, node.state_time = state, now_us()

    def _remove_node(self, pool: Pool, node: Node, deallocation: str) -> None:
        if node.runs and deallocation in ("taskcompletion", "retaineddata"):
            node.removing = True   # taken out once its running tasks end
            self._set_node_state(node, "leavingpool")
            return
        reason = "terminate" if deallocation == "terminate" else "requeue"
        for handle in list(node.runs.values()):
            handle.cancel(reason)
        node.removing = True
        pool.nodes.pop(node.id, None)
        self._node_lifetime(node, removed=now_us())
        node.executor.shutdown(wait=False)

    def _node_lifetime(self, node: Node, allocated=None, removed=None) -> None:
        # The service keeps no record of a node once it has left the pool; the
        # emulator does, so that tests can check what a client measured of its
        # nodes' lifetimes: {pool, node, dedicated, allocated, removed} in µs.
        entry = self.node_lifetimes.setdefault(node.id, {"pool": node.pool.id, "node": node.id, "dedicated": node.dedicated,
                                         "allocated": allocated, "removed": None})
        if removed is not None and entry["removed"] is None:
            entry["removed"] = removed

    def _update_allocation(self, pool: Pool) -> None:
        busy = pool.alloc_pending is not None or any(
            n.state in ("creating", "starting") or n.removing for n in pool.nodes.values())
        state = "resizing" if busy else "steady"
        if pool.alloc_state != state:
            pool.alloc_state, pool.alloc_time = state, now_us()

    def pool_json(self, pool: Pool) -> dict:
        spec = pool.spec
        vm = dict(spec["virtualMachineConfiguration"])
        # Defaults the service fills in (recorded GetPool answers, see tests/emulator/recorded/pools.json).
        vm["imageReference"] = _image_reference(vm)
        if isinstance(vm.get("dataDisks"), list):
            vm["dataDisks"] = [{"caching": "none", **d,
                                "managedDisk": d.get("managedDisk") or {"storageAccountType": "standard_lrs"}}
                               if isinstance(d, dict) else d for d in vm["dataDisks"]]
        if "containerConfiguration" in vm:
            cc = dict(vm["containerConfiguration"])
            if "containerRegistries" in cc:   # the service never returns passwords
                cc["containerRegistries"] = [{k: v for k, v in r.items() if k != "password"}
                                             for r in cc["containerRegistries"]]
            vm["containerConfiguration"] = cc
        body = {
            "id": pool.id, "url": f"{self.base_url}/pools/{pool.id}", "eTag": pool.etag,
            "lastModified": iso(pool.modified), "creationTime": iso(pool.creation),
            "state": pool.state, "stateTransitionTime": iso(pool.state_time),
            "allocationState": pool.alloc_state, "allocationStateTransitionTime": iso(pool.alloc_time),
            "vmSize": spec["vmSize"].lower(), "virtualMachineConfiguration": vm,
            "resizeTimeout": spec.get("resizeTimeout", DEFAULT_RESIZE_TIMEOUT),
            "currentDedicatedNodes": sum(1 for n in pool.nodes.values() if n.dedicated),
            "currentLowPriorityNodes": sum(1 for n in pool.nodes.values() if not n.dedicated),
            "targetDedicatedNodes": pool.target_dedicated, "targetLowPriorityNodes": pool.target_low,
            **self.autoscale_json(pool),
            "enableInterNodeCommunication": spec.get("enableInterNodeCommunication", False),
            "taskSlotsPerNode": pool.slots,
            # Recorded GetPool answers (JS batch-rest, tests/emulator/recorded/pools.json)
            # spell the fill type "Spread" though the REST enum is "spread" ("Pack" by analogy).
            "taskSchedulingPolicy": {"jobDefaultOrder": "none", **spec.get("taskSchedulingPolicy", {}),
                                     "nodeFillType": "Pack" if pool.fill_pack else "Spread"},
        }
        for key in ("displayName", "metadata", "startTask", "networkConfiguration", "userAccounts",
                    "applicationPackageReferences", "mountConfiguration", "upgradePolicy"):
            if key in spec:
                body[key] = spec[key]
        if isinstance(body.get("startTask"), dict):
            body["startTask"] = {"userIdentity": DEFAULT_USER_IDENTITY, "maxTaskRetryCount": 0,
                                 "waitForSuccess": True, **body["startTask"]}
        if isinstance(body.get("networkConfiguration"), dict):
            body["networkConfiguration"] = {"dynamicVNetAssignmentScope": "none", "enableAcceleratedNetworking": False,
                                            **body["networkConfiguration"]}
        if isinstance(body.get("userAccounts"), list):   # passwords are accepted, never returned
            body["userAccounts"] = [{k: v for k, v in u.items() if k != "password"} if isinstance(u, dict) else u
                                    for u in body["userAccounts"]]
        if pool.resize_errors and pool.alloc_state == "steady":
            body["resizeErrors"] = pool.resize_errors
        return body

    def node_json(self, node: Node) -> dict:
        vm = node.pool.spec["virtualMachineConfiguration"]
        body = {
            "id": node.id, "url": f"{self.base_url}/pools/{node.pool.id}/nodes/{node.id}",
            "state": node.state, "schedulingState": "enabled",
            "stateTransitionTime": iso(node.state_time),
            "allocationTime": iso(node.alloc_time), "ipAddress": node.ip,
            "ipv6Address": f"fd00::{node.index:x}",
            "affinityId": f"TVM:{node.id}", "vmSize": node.pool.spec["vmSize"].lower(),
            "totalTasksRun": node.total_run, "runningTasksCount": len(node.runs),
            "runningTaskSlotsCount": node.used, "totalTasksSucceeded": node.total_succeeded,
            "isDedicated": node.dedicated,
            "virtualMachineInfo": {"imageReference": {**_image_reference(vm), "exactVersion": "latest"}},
        }
        if node.boot_time is not None:   # recorded: creating/starting nodes have neither yet
            body["lastBootTime"] = iso(node.boot_time)
            body["nodeAgentInfo"] = {"version": "emulator", "lastUpdateTime": iso(node.boot_time)}
        if node.errors:
            body["errors"] = node.errors
        # recentTasks names the job's tasks; a job preparation task that runs
        # there (state/jobprep.py) is not one of them.
        tasks = [t for t in list(node.runs) if not isinstance(t, PrepRun)]
        if tasks:
            body["recentTasks"] = [{
                "taskUrl": f"{self.base_url}/jobs/{t.job.id}/tasks/{t.id}",
                "jobId": t.job.id, "taskId": t.id, "taskState": t.state,
                "executionInfo": self._execution_info(t),
            } for t in tasks]
        return body


def _image_reference(vm: dict) -> dict:
    ref = dict(vm.get("imageReference") or {})
    if not any(k in ref for k in ("virtualMachineImageId", "sharedGalleryImageId", "communityGalleryImageId")):
        ref.setdefault("version", "latest")   # recorded: the service fills in "latest"
    return ref
