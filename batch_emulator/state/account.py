"""The Batch account: its quotas, the cores of each VM size, and whether node
allocation succeeds (``--quota``, ``--allocation``).

Sources, as the service documents or records them:

- Quotas: "Batch service quotas and limits"
  (https://learn.microsoft.com/azure/batch/batch-quota-limit): dedicated
  cores, low-priority (spot) cores, pools, and active jobs and job schedules
  per account; completed jobs do not count; defaults may be zero.
- Over the pool or job quota the create is refused with 409
  ``PoolQuotaReached`` / ``ActiveJobAndScheduleQuotaReached`` ("Batch Status
  and Error Codes", https://learn.microsoft.com/rest/api/batchservice/batch-status-and-error-codes).
- Over the core quota the pool is still created or resized; it goes
  ``steady`` short of its target with ``resizeErrors``. The codes are the
  .NET ``PoolResizeErrorCodes`` (``AccountCoreQuotaReached``,
  ``AccountLowPriorityCoreQuotaReached``, ``AllocationFailed``); the message
  "The specified account has reached core quota" is the service's own, as
  users quote it (MicrosoftDocs/azure-docs#53298, Azure/doAzureParallel#234).
  Account core quotas exist only in Batch-managed accounts, whose
  preemptible nodes are low-priority and whose quota is the account's
  ``lowPriorityCoreQuota`` ("Use Spot VMs with Batch workloads",
  https://learn.microsoft.com/azure/batch/batch-spot-vms), so the emulator
  reports ``AccountLowPriorityCoreQuotaReached`` rather than
  ``AccountSpotCoreQuotaReached`` (a user-subscription account's error).
- A resize that times out reports ``AllocationTimedout`` (lower-case "o":
  the wire value in the Java SDK's PoolResizeErrorCodes, Azure/Batch#40 and
  the ARM PoolGet example) with "Desired number of dedicated nodes could not
  be allocated as the resize timeout was reached".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .. import exceptions as exc
from .common import DEFAULT_RESIZE_TIMEOUT, duration_seconds


# vCPUs per VM size, from Microsoft's size pages
# (https://learn.microsoft.com/azure/virtual-machines/sizes/overview, series
# Dv3/Dsv3, Dv4/Dsv4/Ddv4/Ddsv4, Dv5/Dsv5/Ddv5/Ddsv5/Dasv5/Dadsv5, the same
# letters for E v3/v4/v5, and Fsv2). In all of them the number in the name
# is the vCPU count; the kit's default is standard_d2s_v3.
def _sizes() -> dict[str, int]:
    out = {}
    for n in (2, 4, 8, 16):
        for family in ("d", "e"):
            for suffix in ("_v3", "s_v3", "_v4", "s_v4", "d_v4", "ds_v4",
                           "_v5", "s_v5", "d_v5", "ds_v5", "as_v5", "ads_v5"):
                out[f"standard_{family}{n}{suffix}"] = n
        out[f"standard_f{n}s_v2"] = n
    return out


VM_CORES = _sizes()


def cores_of(vm_size: str) -> int:
    """Cores one node of ``vm_size`` uses; sizes outside the table count the
    number in their name (standard_d32s_v3 -> 32), or 1."""
    size = vm_size.lower()
    if size in VM_CORES:
        return VM_CORES[size]
    m = re.match(r"standard_[a-z]+(\d+)", size)
    return int(m.group(1)) if m else 1


_QUOTA_KEYS = {"dedicated-cores": "dedicated_cores", "spot-cores": "spot_cores",
               "pools": "pools", "active-jobs": "active_jobs"}


@dataclass(frozen=True)
class Quotas:
    """The account's limits; None means no limit (the default)."""
    dedicated_cores: int | None = None
    spot_cores: int | None = None
    pools: int | None = None
    active_jobs: int | None = None

    @classmethod
    def parse(cls, spec: "str | dict | Quotas | None") -> "Quotas":
        """``dedicated-cores=N,spot-cores=N,pools=N,active-jobs=N`` (any subset),
        or a dict with the same keys (``-`` or ``_``)."""
        if spec is None or spec == "":
            return cls()
        if isinstance(spec, Quotas):
            return spec
        if isinstance(spec, str):
            items = []
            for part in spec.split(","):
                key, eq, value = part.partition("=")
                if not eq:
                    raise ValueError(f"--quota: {part.strip()!r} is not KEY=N "
                                     f"(keys: {', '.join(_QUOTA_KEYS)})")
                items.append((key, value))
        elif isinstance(spec, dict):
            items = list(spec.items())
        else:
            raise ValueError(f"quota: expected a string or a dict, not {type(spec).__name__}")
        values = {}
        for key, value in items:
            name = _QUOTA_KEYS.get(str(key).strip().lower().replace("_", "-"))
            if name is None:
                raise ValueError(f"--quota: unknown key {str(key).strip()!r} (keys: {', '.join(_QUOTA_KEYS)})")
            try:
                n = int(str(value).strip())
            except ValueError:
                n = -1
            if n < 0:
                raise ValueError(f"--quota: {str(key).strip()} must be a whole number >= 0, not {value!r}")
            values[name] = n
        return cls(**values)


ALLOCATION_MODES = ("ok", "fail", "timeout")


def parse_allocation(mode: str | None) -> str:
    mode = (mode or "ok").strip().lower()
    if mode not in ALLOCATION_MODES:
        raise ValueError(f"--allocation: expected one of {'|'.join(ALLOCATION_MODES)}, not {mode!r}")
    return mode


def _resize_error(code: str, message: str) -> dict:
    return {"code": code, "message": message}


class AccountMixin:
    """Quota checks and node allocation outcomes of BatchBackend (needs
    ``self.quotas``, ``self.allocation``, ``self.pools``, ``self.jobs``)."""

    def _check_pool_quota(self) -> None:
        limit = self.quotas.pools
        if limit is not None and len(self.pools) >= limit:
            raise exc.PoolQuotaReached()

    def _check_job_quota(self) -> None:
        limit = self.quotas.active_jobs
        # Completed jobs have no limit; jobs still being deleted are not gone yet.
        if limit is not None and sum(1 for j in self.jobs.values() if j.state != "completed") >= limit:
            raise exc.ActiveJobAndScheduleQuotaReached()

    def _cores_in_use(self, dedicated: bool) -> int:
        return sum(cores_of(p.spec["vmSize"]) for p in self.pools.values()
                   for n in p.nodes.values() if n.dedicated == dedicated)

    def _nodes_to_allocate(self, pool, dedicated: bool, wanted: int) -> int:
        """How many of ``wanted`` new nodes the account gives ``pool`` now;
        records a resize error for the rest."""
        if wanted <= 0:
            return 0
        kind = "dedicated" if dedicated else "low priority"
        limit = self.quotas.dedicated_cores if dedicated else self.quotas.spot_cores
        allowed = wanted
        if limit is not None:
            per_node = cores_of(pool.spec["vmSize"])
            in_use = self._cores_in_use(dedicated)
            allowed = min(wanted, max(0, limit - in_use) // per_node)
            if allowed < wanted:
                code = "AccountCoreQuotaReached" if dedicated else "AccountLowPriorityCoreQuotaReached"
                what = "core quota" if dedicated else "low priority core quota"
                pool.resize_errors.append(_resize_error(
                    code, f"The specified account has reached {what}: {wanted} more {kind} nodes of "
                          f"{pool.spec['vmSize']} need {wanted * per_node} cores, {in_use} of the "
                          f"account's {limit} are in use."))
        if allowed and self.allocation == "fail":
            pool.resize_errors.append(_resize_error(
                "AllocationFailed", f"Desired number of {kind} nodes could not be allocated"))
            return 0
        if allowed and self.allocation == "timeout":
            self._start_allocation_timeout(pool, kind)
            return 0
        return allowed

    def _start_allocation_timeout(self, pool, kind: str) -> None:
        """Hold the pool in ``resizing`` until its resizeTimeout, then steady
        with AllocationTimedout (one timer per resize, however many kinds)."""
        if pool.alloc_pending is None:
            token = pool.alloc_pending = object()
            timeout = duration_seconds(pool.spec.get("resizeTimeout") or DEFAULT_RESIZE_TIMEOUT)
            self.clock.after(timeout, self._allocation_timed_out, pool, token)
            pool.timed_out_kinds = []
        pool.timed_out_kinds.append(kind)

    def _allocation_timed_out(self, pool, token) -> None:
        with self.lock:
            if pool.alloc_pending is not token:
                return
            pool.alloc_pending = None
            pool.resize_errors.extend(_resize_error(
                "AllocationTimedout",
                f"Desired number of {kind} nodes could not be allocated as the resize timeout was reached")
                for kind in pool.timed_out_kinds)
            self._update_allocation(pool)
