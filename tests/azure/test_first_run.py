"""A first run on a new Batch account, through the real CLI against Azurite and
the Batch emulator with its adversity options: a pool that cannot get nodes
stops the run within a few polls with one line (the cause, what to do, what
is left on Azure and the command that removes it), and nothing is left that
the line does not name; a pool being deleted is waited for and created again.
"""

import os
import re
import shlex
import subprocess
import time
from urllib.parse import unquote

import pytest

from tests.docker.conftest import docker_client, registry  # noqa: F401  (fixtures)
from tests.kit import last_line, plain_loop

TASK = """
def global_config(): return {'power': 2}
def parameters(): return [1, 2, 3, 4]
def task(config, p): return p ** config['power']
def aggregate(results): return sum(results)
"""

QUOTA_PAGE = "https://learn.microsoft.com/azure/batch/batch-quota-limit"


def error_line(done) -> str:
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def left(run: str, pool_nodes: str, pool: str = "superbatch") -> str:
    return (f"Left on Azure: pool '{pool}' ({pool_nodes}) and blob container 'superbatch-{run}' (the run's inputs); "
            f"remove with: python controller.py --run {run} --backend azure --pool-id {pool} --cancel --delete-pool --delete-container")


def requests(cloud, operation: str) -> int:
    """How many requests of this operation the emulator answered, whatever the status."""
    return sum(cloud.emulator.stats()["requests"]["byOperation"].get(operation, {}).values())


def polls(cloud) -> int:
    return requests(cloud, "Jobs_GetJobTaskCounts")


def cleaned_up_by_the_named_command(kit, cloud, line: str, run: str) -> None:
    """Before: exactly what the line names is on Azure (the pool, the container;
    the job ended). After the line's own command: nothing."""
    client = cloud.emulator.client()
    assert [pool.id for pool in client.list_pools()] == ["superbatch"]
    assert [job.state for job in client.list_jobs()] in (["completed"], ["terminating"])
    assert cloud.container(run).exists()
    command = shlex.split(line.split("remove with: ", 1)[1])
    assert command[:2] == ["python", "controller.py"]
    cleaned = kit.run(*command[2:], env=cloud.env)
    assert cleaned.returncode == 0, cleaned.stderr
    assert [pool.id for pool in client.list_pools()] == []
    assert not cloud.container(run).exists()


@pytest.mark.parametrize("quota, flags, kind, code, asked", [
    ("dedicated-cores=0", [], "dedicated", "AccountCoreQuotaReached",
     "The specified account has reached core quota: 1 more dedicated nodes of standard_d2s_v3 need 2 cores, 0 of the account's 0 are in use."),
    ("spot-cores=0", ["--dedicated-nodes", "0", "--spot-nodes", "2"], "low-priority/spot", "AccountLowPriorityCoreQuotaReached",
     "The specified account has reached low priority core quota: 2 more low priority nodes of standard_d2s_v3 need 4 cores, 0 of the account's 0 are in use."),
], ids=["dedicated", "spot"])
def test_core_quota_zero_stops_with_the_quota_line(kit, make_cloud, quota, flags, kind, code, asked):
    cloud = make_cloud(quota=quota)
    kit.write_task(TASK)
    done = cloud.run(kit, "quota", *flags, timeout=120)
    line = error_line(done)
    assert line == (f"error: pool 'superbatch' cannot get nodes: the Batch account's {kind} core quota is reached ({code}: {asked}); "
                    f"request more in the Azure portal: Batch account > Quotas ({QUOTA_PAGE}); job 'superbatch-quota' is ended. "
                    + left("quota", "0 nodes, none billed yet"))
    assert polls(cloud) <= 3
    cleaned_up_by_the_named_command(kit, cloud, line, "quota")


def test_allocation_failed_stops_with_the_allocation_line(kit, make_cloud):
    cloud = make_cloud(allocation="fail")
    kit.write_task(TASK)
    line = error_line(cloud.run(kit, "alloc", timeout=120))
    assert line == ("error: pool 'superbatch' cannot get nodes: Azure could not allocate its nodes (AllocationFailed: Desired number "
                    "of dedicated nodes could not be allocated); try another --vm-size or region, or rerun later; "
                    "job 'superbatch-alloc' is ended. " + left("alloc", "0 nodes, none billed yet"))
    assert polls(cloud) <= 3
    cleaned_up_by_the_named_command(kit, cloud, line, "alloc")


def test_a_resizing_pool_is_waited_for_until_its_resize_timeout(kit, make_cloud):
    """Resizing within its resizeTimeout is fine (the progress line says what
    the tasks wait for); the AllocationTimedout that ends it stops the run."""
    from azure.batch import models

    cloud = make_cloud(allocation="timeout")
    client = cloud.emulator.client()
    client.create_pool(models.BatchPoolCreateOptions(
        id="superbatch", vm_size="standard_d2s_v3", target_dedicated_nodes=0,
        virtual_machine_configuration=models.VirtualMachineConfiguration(
            image_reference=models.BatchVmImageReference(publisher="canonical", offer="ubuntu", sku="22_04-lts"),
            node_agent_sku_id="batch.node.ubuntu 22.04")))
    kit.write_task(TASK)
    process = subprocess.Popen(kit.command(*cloud.flags(kit, "slow")), cwd=kit.path, env={**os.environ, **cloud.env},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while polls(cloud) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        # The resize starts once the run polls, whatever time the kit took to start;
        # its timeout is past the progress line's 10 s interval, so a line shows it.
        client.begin_resize_pool("superbatch", models.BatchPoolResizeOptions(target_dedicated_nodes=2, resize_timeout="PT12S"))
        resized = time.monotonic()
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    line = error_line(done)
    assert time.monotonic() - resized >= 12  # not before the resize timeout
    assert line == ("error: pool 'superbatch' cannot get nodes: its nodes were not allocated within the resize timeout "
                    "(AllocationTimedout: Desired number of dedicated nodes could not be allocated as the resize timeout was reached); "
                    "try another --vm-size or region, or rerun later; job 'superbatch-slow' is ended. "
                    + left("slow", "0 nodes, none billed yet"))
    progress = [line for line in stderr.splitlines() if "waiting for nodes" in line]
    # still waiting, and saying so, ten seconds into the resize
    assert any(re.fullmatch(r"\[superbatch\] 0/4 done, 0 failed, 4 tasks waiting for nodes: 0 of 2 dedicated, allocating, 1\ds", line)
               for line in progress), stderr
    cleaned_up_by_the_named_command(kit, cloud, line, "slow")


def test_pool_quota_at_creation(kit, make_cloud):
    cloud = make_cloud(quota="pools=0")
    kit.write_task(TASK)
    line = error_line(cloud.run(kit, "pools", timeout=120))
    assert line == ("error: creating pool 'superbatch' failed: PoolQuotaReached: the Batch account 'emulator' has as many pools "
                    "as its quota allows; reuse one with --pool-id, delete one you no longer need (az batch pool list), or "
                    "request more in the Azure portal (your Batch account > Quotas > Request quota increase; "
                    f"{QUOTA_PAGE}). Left on Azure: blob container 'superbatch-pools' (the run's inputs); remove with: "
                    "python controller.py --run pools --backend azure --pool-id superbatch --cancel --delete-container")
    client = cloud.emulator.client()
    assert list(client.list_pools()) == [] and list(client.list_jobs()) == []
    cleaned = kit.run(*shlex.split(line.split("remove with: ", 1)[1])[2:], env=cloud.env)
    assert cleaned.returncode == 0, cleaned.stderr
    assert not cloud.container("pools").exists()


def test_active_job_quota_at_creation(kit, make_cloud):
    cloud = make_cloud(quota="active-jobs=0")
    kit.write_task(TASK)
    line = error_line(cloud.run(kit, "jobs", timeout=120))
    assert line == ("error: creating job 'superbatch-jobs' failed: ActiveJobAndScheduleQuotaReached: the Batch account 'emulator' "
                    "has as many active jobs as its quota allows; end finished jobs (az batch job list --query \"[?state=='active'].id\", "
                    "then az batch job stop --job-id ID), or request more in the Azure portal (your Batch account > Quotas > "
                    f"Request quota increase; {QUOTA_PAGE}). " + left("jobs", "its nodes billed while they exist"))
    client = cloud.emulator.client()
    assert list(client.list_jobs()) == []
    assert [pool.id for pool in client.list_pools()] == ["superbatch"]
    cleaned = kit.run(*shlex.split(line.split("remove with: ", 1)[1])[2:], env=cloud.env)
    assert cleaned.returncode == 0, cleaned.stderr
    assert list(client.list_pools()) == [] and not cloud.container("jobs").exists()


def test_a_pool_being_deleted_is_waited_for_then_created_again(kit, make_cloud):
    from azure.batch import models

    cloud = make_cloud(delete_delay=20.0)  # longer than the kit takes to start and stage
    client = cloud.emulator.client()
    client.create_pool(models.BatchPoolCreateOptions(
        id="superbatch", vm_size="standard_a1_v2", target_dedicated_nodes=1,
        virtual_machine_configuration=models.VirtualMachineConfiguration(
            image_reference=models.BatchVmImageReference(publisher="canonical", offer="ubuntu", sku="22_04-lts"),
            node_agent_sku_id="batch.node.ubuntu 22.04")))
    client.begin_delete_pool("superbatch")
    assert client.get_pool("superbatch").state == "deleting"
    kit.write_task(TASK)
    done = cloud.run(kit, "again", timeout=120)
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == plain_loop(kit.path)
    assert "[superbatch] pool superbatch is being deleted; waiting until it is gone to create it again (0s)" in done.stderr.splitlines()
    assert client.get_pool("superbatch").vm_size == "standard_d2s_v3"  # the kit's own, created anew


# --- containers: an image that was never pushed ---------------------------------

def test_an_image_never_pushed_makes_unusable_nodes_and_the_image_line(kit, make_cloud, registry, docker_client):
    cloud = make_cloud(docker="on")
    image = f"{registry.server}/superbatch-never-pushed:v1"
    kit.write_task(TASK)
    done = kit.run("--backend", "azure", "--run", "unpulled", "--image", image, "--dedicated-nodes", "2", "--poll-interval", "0.2",
                   env={**cloud.env, **registry.env()}, timeout=300)
    line = error_line(done)
    prefix = (f"error: pool 'superbatch' cannot get nodes: its 2 nodes are unusable: the image {image} could not be pulled "
              f"(ContainerInvalidImage: ")
    suffix = ("); was it pushed (--push)? is the registry login right (REGISTRY_SERVER, REGISTRY_USERNAME, REGISTRY_PASSWORD)?; "
              "job 'superbatch-unpulled' is ended. " + left("unpulled", "2 nodes, billed while they exist"))
    assert line.startswith(prefix) and line.endswith(suffix), line
    nodes = list(cloud.emulator.client().list_nodes("superbatch"))
    assert [node.state for node in nodes] == ["unusable", "unusable"]  # still there, still billed: the line says so
    cleaned_up_by_the_named_command(kit, cloud, line, "unpulled")


def test_the_watchdog_reads_nothing_while_tasks_run(kit, cloud):
    """At most one extra request per poll, and none while a task runs."""
    kit.write_task(TASK.replace("def task(config, p): return", "import time\ndef task(config, p): time.sleep(1); return"))
    done = cloud.run(kit, "quiet", timeout=120)
    assert done.returncode == 0, done.stderr
    # What the client sent (the proxy's record): the watchdog's pool reads select
    # allocationState; the run report's node samples select only the counts; the
    # cost's node reads (every few polls, elastic.py) select allocationTime.
    sent = [unquote(url) for url in cloud.batch.urls]
    watchdog_reads = sum(1 for url in sent if "/pools/superbatch?" in url and "allocationState" in url) + \
        sum(1 for url in sent if "/pools/superbatch/nodes" in url and "allocationTime" not in url)
    assert polls(cloud) >= 15  # four 1-second tasks on one node at 0.2 s per poll
    assert watchdog_reads <= 3, watchdog_reads  # only before the first task starts



# --- what no emulator option produces: the causes read from the SDK's own models ---

def test_a_failed_start_task_and_the_other_spelling_of_a_timeout():
    from azure.batch import models

    from superbatch.backends.azure.watchdog import node_cause, resize_cause

    nodes = [models.BatchNode(state="starttaskfailed"), models.BatchNode(state="starttaskfailed")]
    assert node_cause(nodes, "repo/app:v1") == "its 2 nodes failed their start task; fix the pool's start task or choose another --pool-id"
    # .NET names the code AllocationTimedOut; the service sends AllocationTimedout
    assert resize_cause(models.ResizeError(code="AllocationTimedOut", message="m")).startswith(
        "its nodes were not allocated within the resize timeout (AllocationTimedOut: m)")


def test_lagging_task_counts_never_make_an_endless_wait(kit, make_cloud):
    """The service's counts can miss a change for a while ("Get resource
    counts"); the run must still end, with the plain loop's result."""
    cloud = make_cloud(counts_lag=3.0)
    kit.write_task(TASK)
    done = cloud.run(kit, "lag", timeout=180)
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == plain_loop(kit.path)


def test_runs_whose_names_differ_only_in_case_never_collide(kit, cloud):
    """Batch ids compare without regard to case: 'Sweep' and 'sweep' get jobs and
    containers of their own, and --delete-container of one leaves the other."""
    kit.write_task(TASK)
    upper = cloud.run(kit, "Sweep")
    kit.write_task(TASK.replace("'power': 2", "'power': 3"))
    lower = cloud.run(kit, "sweep", "--delete-container")
    assert upper.returncode == 0 and lower.returncode == 0, upper.stderr + lower.stderr
    assert last_line(lower.stdout) == plain_loop(kit.path) == str(1 + 8 + 27 + 64)
    assert last_line(upper.stdout) == str(1 + 4 + 9 + 16)
    jobs = sorted(job.id for job in cloud.emulator.client().list_jobs())
    assert len(jobs) == 2 and len({job.lower() for job in jobs}) == 2, jobs
    containers = [c.name for c in cloud.azurite.blob_service().list_containers() if c.name.startswith("superbatch-sweep")]
    assert len(containers) == 1 and containers[0] != "superbatch-sweep", containers  # Sweep's is left, sweep's deleted


def test_nodes_that_cannot_fetch_the_config_stop_the_run_with_the_preparation_line(kit, azurite):
    """worker.py's runs fetch the config once per node through the job's
    preparation task; when no node can (here every GET of the config blob
    fails at the storage proxy), the nodes stay idle and the tasks would wait
    forever. No --task-command: the kit's own worker.py path, whose tasks never start."""
    from tests.azure.conftest import cloud_factory

    def config_only(method: str, url: str) -> bool:
        return method == "GET" and url.split("?")[0].endswith("/config.pickle")

    with cloud_factory(azurite, may_fail=config_only) as make:
        cloud = make(blob_failure_rate=1.0)
        kit.write_task(TASK)
        done = kit.run("--backend", "azure", "--run", "prep", "--poll-interval", "0.2", "--fixed-pool", env=cloud.env, timeout=240)
        line = error_line(done)
        assert line.startswith("error: job 'superbatch-prep' cannot run: its preparation task, which brings the shared config "
                               "to each node, failed on 1 node (BlobDownloadMiscError: "), line
        assert line.endswith("; the job is ended. Left on Azure: pool 'superbatch' (its nodes billed while they exist) and blob "
                             "container 'superbatch-prep' (the run's inputs); remove with: python controller.py --run prep "
                             "--backend azure --pool-id superbatch --cancel --delete-pool --delete-container"), line
        assert cloud.blobs.count("GET", "/config.pickle") == 0  # every read of it failed
        cleaned_up_by_the_named_command(kit, cloud, line, "prep")
