"""Elastic pools and the cost block, on Azurite and the Batch emulator.

The emulators run with autoscale_interval=INTERVAL: the service's 5-minute
evaluation interval (the one the kit asks for) lasts INTERVAL real seconds,
and every autoscale time scales with it (a minute is INTERVAL / 5 seconds).
Each run's aggregate is compared with the plain serial loop.
"""

import json
import signal
import subprocess
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from azure.batch import models as bm

from superbatch.backends.azure import cost
from tests.kit import last_line, plain_loop
from tests.emulator.conftest import pool_options

INTERVAL = 10.0  # real seconds per 5 service minutes
MINUTE = INTERVAL / 5
COUNT = 8
# The kit reads the pool every 6 polls: 30 s at its default 5 s poll, half the
# service's minute. The same share of the emulator's minute: 6 * 0.15 s.
SLOTS = ["--dedicated-nodes", "2", "--task-slots", "2", "--poll-interval", "0.15"]

SLOW_TASK = """
    import time
    def global_config(): return {"scale": 3}
    def parameters(): return list(range(%d))
    def task(config, i):
        time.sleep(%s)
        return i * config["scale"] + 1
    def aggregate(results): return sum(results)
"""


def write_task(kit, count=COUNT, seconds=1.0):
    kit.write_task(SLOW_TASK % (count, seconds))


def micro(moment: datetime) -> int:
    return int(moment.timestamp() * 1e6)


def lifetimes(cloud, pool_id="superbatch") -> list:
    return [entry for entry in cloud.emulator.backend.node_lifetimes.values() if entry["pool"] == pool_id]


def first_task_added(cloud, job_id: str) -> int:
    return min(micro(task.creation_time) for task in cloud.job_tasks(job_id))


def last_task_end(cloud, job_id: str) -> int:
    return max(micro(task.execution_info.end_time) for task in cloud.job_tasks(job_id))


def wait_until(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {seconds} s: {what}")


def nodes_now(cloud, pool_id="superbatch") -> int:
    pool = cloud.emulator.client().get_pool(pool_id)
    return (pool.current_dedicated_nodes or 0) + (pool.current_low_priority_nodes or 0)


def drained_at(cloud, pool_id="superbatch") -> int:
    """When the last node left (µs), once the pool has none."""
    wait_until(lambda: nodes_now(cloud, pool_id) == 0, 3 * INTERVAL, "the pool at zero nodes")
    return max(entry["removed"] for entry in lifetimes(cloud, pool_id))


def test_elastic_pool_starts_within_a_minute_finishes_and_drains(kit, make_cloud, tmp_path):
    write_task(kit)
    expected = plain_loop(kit.path)
    cloud = make_cloud(autoscale_interval=INTERVAL)
    summary = tmp_path / "summary.json"
    done = cloud.run(kit, "grow", *SLOTS, "--price-per-node-hour", "0.5", "--summary-json", summary)
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == expected
    assert "elastic: 0 to 2 dedicated, 0 spot" in done.stderr

    pool = cloud.emulator.client().get_pool("superbatch")
    assert pool.enable_auto_scale and "$NodeDeallocationOption = taskcompletion" in pool.auto_scale_formula
    assert {item.name: item.value for item in pool.metadata} == {"superbatch": "elastic"}
    nodes = lifetimes(cloud)
    added = first_task_added(cloud, "superbatch-grow")
    # The first evaluation (at creation) saw no task; without the fast start the
    # next one comes a whole interval later.
    first_node = min(entry["allocated"] for entry in nodes)
    assert first_node - added < MINUTE * 1e6, f"first node {(first_node - added) / 1e6:.1f} s after the tasks"
    assert 0 < len(nodes) <= 2 and all(entry["dedicated"] for entry in nodes)
    # Drained within one evaluation interval of the last task (and a sample period).
    assert drained_at(cloud) - last_task_end(cloud, "superbatch-grow") <= (INTERVAL + MINUTE) * 1e6

    # The cost block's node-hours are the emulator's node lifetimes over the same window.
    block = json.loads(summary.read_text())["cost"]
    start, end = (micro(datetime.fromisoformat(block[key])) for key in ("measured_from", "measured_to"))
    truth = sum(max(0, min(entry["removed"] or end, end) - max(entry["allocated"], start)) for entry in nodes) / 3.6e9
    assert abs(block["node_hours_dedicated"] - truth) <= 0.05 * truth, (block, truth)
    assert block["node_hours_spot"] == 0 and block["preemptions"] == 0
    busy = sum((task.execution_info.end_time - task.execution_info.start_time).total_seconds()
               for task in cloud.job_tasks("superbatch-grow"))
    assert block["task_hours"] == round(busy / 3600, 6) and busy >= COUNT * 1.0
    assert 0 < block["utilization"] <= 1
    assert block["price_per_node_hour"] == 0.5
    assert abs(block["estimated_cost"] - block["node_hours_dedicated"] * 0.5) < 1e-5
    assert block["idle_node_minutes"] is not None
    assert "cost: " in done.stderr and "node-hours" in done.stderr
    assert json.loads(summary.read_text())["fallback"] is None


def test_the_pool_drains_when_the_controller_was_killed(kit, make_cloud):
    write_task(kit, count=12, seconds=1.5)
    expected = plain_loop(kit.path)
    cloud = make_cloud(autoscale_interval=INTERVAL)
    proc = subprocess.Popen(kit.command(*cloud.flags(kit, "killed", *SLOTS)), cwd=kit.path, env={**__import__("os").environ, **cloud.env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: cloud.emulator.stats()["tasks"].get("succeeded", 0) >= 2, 60, "two tasks done")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # No controller: the tasks finish on the pool, and the formula drains it.
    wait_until(lambda: all(task.state == "completed" for task in cloud.job_tasks("superbatch-killed")), 60, "every task done")
    assert drained_at(cloud) - last_task_end(cloud, "superbatch-killed") <= (INTERVAL + MINUTE) * 1e6
    done = cloud.run(kit, "killed", *SLOTS)
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == expected


def test_spot_quota_zero_falls_back_to_dedicated_nodes(kit, make_cloud, tmp_path):
    write_task(kit, count=4, seconds=0.5)
    expected = plain_loop(kit.path)
    cloud = make_cloud(autoscale_interval=INTERVAL, quota="spot-cores=0")
    summary = tmp_path / "summary.json"
    done = cloud.run(kit, "spot", "--spot-nodes", "2", "--dedicated-nodes", "1", "--summary-json", summary, timeout=120)
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == expected
    fallback = json.loads(summary.read_text())["fallback"]
    assert fallback["from"] == "spot" and fallback["to"] == "dedicated"
    assert fallback["reason"].startswith("AccountLowPriorityCoreQuotaReached")
    assert "dedicated nodes take over (up to 1)" in done.stderr
    assert {entry["dedicated"] for entry in lifetimes(cloud)} == {True}


def test_a_users_own_pool_is_never_changed(kit, make_cloud, tmp_path):
    write_task(kit, count=4, seconds=0.2)
    expected = plain_loop(kit.path)
    cloud = make_cloud(autoscale_interval=INTERVAL)
    client = cloud.emulator.client()
    client.create_pool(pool_options("mine", dedicated=1))
    wait_until(lambda: nodes_now(cloud, "mine") == 1, 10, "the user's node")
    summary = tmp_path / "summary.json"
    done = cloud.run(kit, "theirs", "--pool-id", "mine", "--dedicated-nodes", "3", "--summary-json", summary)
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == expected
    assert not cloud.batch.arrived("POST", "/enableautoscale") and not cloud.batch.arrived("POST", "/resize")
    pool = client.get_pool("mine")
    assert not pool.enable_auto_scale and pool.target_dedicated_nodes == 1 and pool.metadata is None
    assert "stay allocated, and billed" in done.stderr  # its node is still there: said, not changed
    assert json.loads(summary.read_text())["cost"]["node_hours_dedicated"] > 0


def test_fixed_pool_keeps_its_size(kit, make_cloud):
    write_task(kit, count=2, seconds=0.2)
    cloud = make_cloud(autoscale_interval=INTERVAL)
    done = cloud.run(kit, "fixed", "--fixed-pool", "--dedicated-nodes", "2")
    assert done.returncode == 0, done.stderr
    pool = cloud.emulator.client().get_pool("superbatch")
    assert not pool.enable_auto_scale and pool.target_dedicated_nodes == 2
    assert {item.name: item.value for item in pool.metadata} == {"superbatch": "fixed"}
    assert not cloud.batch.arrived("POST", "/enableautoscale")


# A price answer in the shape of the Retail Prices API's documented response
# (learn.microsoft.com/rest/api/cost-management/retail-prices/azure-retail-prices).
# Not recorded: the API cannot be reached from here; the prices are made up.
PRICE_ANSWER = {
    "BillingCurrency": "USD", "CustomerEntityId": "Default", "CustomerEntityType": "Retail",
    "Items": [
        {"currencyCode": "USD", "retailPrice": 0.096, "unitPrice": 0.096, "armRegionName": "westeurope",
         "armSkuName": "Standard_D2s_v3", "meterName": "D2s v3", "productName": "Virtual Machines DSv3 Series",
         "skuName": "D2s v3", "serviceName": "Virtual Machines", "unitOfMeasure": "1 Hour", "type": "Consumption"},
        {"currencyCode": "USD", "retailPrice": 0.188, "unitPrice": 0.188, "armRegionName": "westeurope",
         "armSkuName": "Standard_D2s_v3", "meterName": "D2s v3", "productName": "Virtual Machines DSv3 Series Windows",
         "skuName": "D2s v3", "serviceName": "Virtual Machines", "unitOfMeasure": "1 Hour", "type": "Consumption"},
    ],
    "NextPageLink": "NEXT", "Count": 2,
}
PRICE_PAGE_2 = {"Items": [
    {"currencyCode": "USD", "retailPrice": 0.0192, "unitPrice": 0.0192, "armRegionName": "westeurope",
     "armSkuName": "Standard_D2s_v3", "meterName": "D2s v3 Spot", "productName": "Virtual Machines DSv3 Series",
     "skuName": "D2s v3 Spot", "serviceName": "Virtual Machines", "unitOfMeasure": "1 Hour", "type": "Consumption"},
], "NextPageLink": None, "Count": 1}


def test_price_is_looked_up_once_and_cached(tmp_path, monkeypatch):
    asked = []

    class Prices(BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            page = PRICE_PAGE_2 if "page=2" in self.path else dict(PRICE_ANSWER, NextPageLink=f"{base}?page=2")
            body = json.dumps(page).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Prices)
    base = f"http://127.0.0.1:{server.server_port}/api/retail/prices"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(cost.PRICES_API_VARIABLE, base)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    try:
        region = cost.region_of("https://mybatch.westeurope.batch.azure.com")
        assert region == "westeurope"
        found = cost.price("standard_d2s_v3", region, None)
        assert found == {"regular": 0.096, "spot": 0.0192, "currency": "USD"}  # Linux, not Windows; the Spot meter
        assert "armSkuName+eq+%27Standard_D2s_v3%27" in asked[0] and "armRegionName+eq+%27westeurope%27" in asked[0]
        assert cost.price("standard_d2s_v3", region, None) == found and len(asked) == 2  # two pages, then the cache
        assert json.loads((tmp_path / "superbatch" / "prices.json").read_text())["standard_d2s_v3@westeurope"]["price"] == found
        assert cost.price("standard_d2s_v3", None, None) is None  # an emulator's endpoint has no region
        assert cost.price("standard_d2s_v3", region, 0.25) == {"regular": 0.25, "spot": 0.25, "currency": None}
    finally:
        server.shutdown()
