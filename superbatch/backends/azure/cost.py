"""What a run cost: node-hours read from the pool's node list, task-hours
from the tasks' execution times, and a price per node-hour.

Batch keeps no record of a node once it has left the pool (its pool usage
metrics were retired in 2024), so the node list is read now and then (every
few polls, not every one) and each node's time is counted from its
allocationTime until it was last seen, plus half the gap to the first read
that no longer listed it. Counted: the time between the first task added and
the end of the run (the last output home), for this run's pool; a node that
came and went while no controller watched is missed.

Prices: --price-per-node-hour, else the Azure Retail Prices API (public, no
key) for the VM size and the region of the Batch endpoint
(<account>.<region>.batch.azure.com), cached in ~/.cache/superbatch/prices.json.
"""

import json
import os
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

PRICES_API = "https://prices.azure.com/api/retail/prices"
# Tests only: a local server with a recorded answer stands in for the API (it cannot be reached there).
PRICES_API_VARIABLE = "SUPERBATCH_PRICES_API"
CACHE_DAYS = 7


def now() -> datetime:
    return datetime.now(timezone.utc)


class NodeLedger:
    """Node lifetimes as seen in the node list, and task times, for one run."""

    def __init__(self, start: datetime):
        self.start = start
        self.nodes: dict = {}  # id -> {"dedicated", "allocated", "seen", "gone"}
        self.preempted: set = set()  # (node id, state transition time): one preemption each
        self.preempted_nodes: set = set()
        self.last_read: Optional[datetime] = None
        self.busy_seconds = 0.0
        self.last_task_end: Optional[datetime] = None
        self.slots = 1

    def observe(self, nodes: list, at: datetime) -> None:
        listed = set()
        for node in nodes:
            listed.add(node.id)
            entry = self.nodes.setdefault(node.id, {"dedicated": bool(node.is_dedicated),
                                                    "allocated": node.allocation_time or at, "seen": at, "gone": None})
            entry["seen"], entry["gone"] = at, None
            if str(getattr(node.state, "value", node.state)) == "preempted":
                self.preempted.add((node.id, node.state_transition_time))
                self.preempted_nodes.add(node.id)
        for node_id, entry in self.nodes.items():
            if node_id not in listed and entry["gone"] is None:
                entry["gone"] = entry["seen"] + (at - entry["seen"]) / 2  # left between two reads
        self.last_read = at

    def task(self, info) -> None:
        """A completed task's executionInfo (its last attempt)."""
        if info is None or info.start_time is None or info.end_time is None:
            return
        self.busy_seconds += max(0.0, (info.end_time - info.start_time).total_seconds())
        if self.last_task_end is None or info.end_time > self.last_task_end:
            self.last_task_end = info.end_time

    def spot_counts(self) -> tuple:
        """(spot nodes preempted at least once, spot nodes seen)."""
        spot = [node_id for node_id, entry in self.nodes.items() if not entry["dedicated"]]
        return len(self.preempted_nodes.intersection(spot)), len(spot)

    def node_seconds(self, start: datetime, end: datetime, dedicated: bool) -> float:
        total = 0.0
        for entry in self.nodes.values():
            if entry["dedicated"] != dedicated:
                continue
            first = max(entry["allocated"], start)
            last = min(entry["gone"] or entry["seen"], end)
            total += max(0.0, (last - first).total_seconds())
        return total

    def block(self, end: datetime, price: Optional[dict]) -> dict:
        """The summary's "cost"; null where unknown."""
        dedicated_h = self.node_seconds(self.start, end, True) / 3600
        spot_h = self.node_seconds(self.start, end, False) / 3600
        slot_h = (dedicated_h + spot_h) * self.slots
        idle = None
        if self.last_task_end is not None:
            idle = (self.node_seconds(self.last_task_end, end, True) + self.node_seconds(self.last_task_end, end, False)) / 60
        regular, spot = (price or {}).get("regular"), (price or {}).get("spot")
        cost = None
        if regular is not None and (spot is not None or spot_h == 0):
            cost = round(dedicated_h * regular + spot_h * (spot or 0.0), 6)
        return {
            "node_hours_dedicated": round(dedicated_h, 6),
            "node_hours_spot": round(spot_h, 6),
            "task_hours": round(self.busy_seconds / 3600, 6),
            "utilization": round(self.busy_seconds / 3600 / slot_h, 3) if slot_h else None,
            "preemptions": len(self.preempted),
            "idle_node_minutes": round(idle, 2) if idle is not None else None,
            "price_per_node_hour": regular,
            "price_per_spot_node_hour": spot,
            "estimated_cost": cost,
            "currency": (price or {}).get("currency"),
            "measured_from": self.start.isoformat(),
            "measured_to": end.isoformat(),
        }


def region_of(endpoint: str) -> Optional[str]:
    """The region in <account>.<region>.batch.azure.com; None elsewhere (an emulator)."""
    host = urllib.parse.urlparse(endpoint).hostname or ""
    parts = host.split(".")
    if len(parts) >= 5 and parts[-3:] == ["batch", "azure", "com"]:
        return parts[1]
    return None


def price(vm_size: str, region: Optional[str], given: Optional[float], say=lambda message: None) -> Optional[dict]:
    """{"regular", "spot", "currency"} per node-hour: --price-per-node-hour for
    both kinds, else the Retail Prices API's Linux meters (cached); None when unknown."""
    if given is not None:
        return {"regular": given, "spot": given, "currency": None}
    if not region:
        return None
    key = f"{vm_size.lower()}@{region.lower()}"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "superbatch" / "prices.json"
    try:
        cached = json.loads(cache.read_text())
    except (OSError, ValueError):
        cached = {}
    hit = cached.get(key)
    if hit and (now().timestamp() - hit.get("fetched", 0)) < CACHE_DAYS * 86400:
        return hit["price"]
    try:
        found = lookup(vm_size, region)
    except Exception as error:  # no network, a changed API: the cost stays unknown, the run goes on
        say(f"no price for {vm_size} in {region} ({type(error).__name__}); pass --price-per-node-hour")
        return None
    if found:
        cached[key] = {"fetched": now().timestamp(), "price": found}
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(cached, indent=1))
        except OSError:
            pass
    return found


def lookup(vm_size: str, region: str, timeout: float = 10.0) -> Optional[dict]:
    """Ask the Retail Prices API for the VM size's pay-as-you-go Linux prices:
    the regular meter, and the Spot one (or the older Low Priority one)."""
    sku = arm_sku_name(vm_size)
    query = (f"serviceName eq 'Virtual Machines' and armRegionName eq '{region.lower()}' "
             f"and armSkuName eq '{sku}' and priceType eq 'Consumption'")
    url = (os.environ.get(PRICES_API_VARIABLE) or PRICES_API) + "?" + urllib.parse.urlencode({"$filter": query})
    items = []
    while url and len(items) < 1000:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            page = json.load(answer)
        items += page.get("Items", [])
        url = page.get("NextPageLink")
    linux = [item for item in items if "windows" not in item.get("productName", "").lower()
             and item.get("unitOfMeasure") == "1 Hour" and item.get("type", "Consumption") == "Consumption"]
    regular = [item for item in linux if not any(word in item.get("meterName", "") for word in ("Spot", "Low Priority"))]
    spot = [item for item in linux if "Spot" in item.get("meterName", "")] or \
           [item for item in linux if "Low Priority" in item.get("meterName", "")]
    if not regular:
        return None
    return {"regular": regular[0]["retailPrice"], "spot": spot[0]["retailPrice"] if spot else None,
            "currency": regular[0].get("currencyCode")}


def arm_sku_name(vm_size: str) -> str:
    """How the price list spells a size: standard_d2s_v3 -> Standard_D2s_v3."""
    parts = vm_size.split("_")
    return "_".join(part if (index and part[:1].lower() == "v" and part[1:].isdigit()) else part[:1].upper() + part[1:]
                    for index, part in enumerate(parts))
