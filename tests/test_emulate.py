"""--emulate through the real command line: a Kit copy laid out as a clone is
(controller.py with batch_emulator/ and node_modules/ beside it), Azurite and
the Batch emulator started by the kit itself, tasks on this host (no Docker
engine answers: DOCKER_HOST names nothing).

Compared with the plain serial loop, never with another backend.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from superbatch.emulate import _free_port, _run_port, azurite_command
from superbatch.errors import SuperbatchError
from tests.kit import REPO, Kit, last_line, plain_loop

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
# A real account's variables, as a user may have them exported: --emulate must ignore them.
REAL_ACCOUNT = {"BATCH_ACCOUNT_NAME": "Not_An_Account!", "BATCH_ACCOUNT_ENDPOINT": "ftp://nowhere",
                "BATCH_ACCOUNT_KEY": "not-base64", "STORAGE_ACCOUNT_CONNECTION_STRING": "garbage"}

SLOW_TASK = """
import os, time

def global_config():
    return {"log": os.path.join(os.path.dirname(os.path.abspath(__file__)), "side-effects.log")}

def parameters():
    return list(range(8))

def task(config, i):
    time.sleep(0.7)
    with open(config["log"], "a") as log:   # one line per run of a task: the side effect
        log.write(f"{i}\\n")
    return i * i

def aggregate(results):
    return sum(results)
"""


@pytest.fixture
def kit(tmp_path):
    kit = Kit(tmp_path)
    # What a clone of the repository has beside controller.py.
    import shutil

    shutil.copytree(REPO / "batch_emulator", tmp_path / "batch_emulator", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "node_modules").symlink_to(REPO / "node_modules")
    return kit


def emulator_processes(kit) -> list:
    """Azurite, the emulator and task processes started for this kit copy (their command lines name it)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(kit.path) in cmdline and ("azurite" in cmdline or "batch_emulator" in cmdline or "worker.py" in cmdline):
            found.append(cmdline)
    return found


def assert_nothing_left(kit, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while emulator_processes(kit) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert emulator_processes(kit) == []


def completed_tasks(kit, run: str) -> set:
    """Indices of the tasks the emulated account's state file has as completed."""
    try:
        state = json.loads((kit.run_dir(run) / "emulated" / "batch-state.json").read_text())
    except (OSError, ValueError):
        return set()
    return {int(t["id"].rsplit("-", 1)[1]) for job in state["jobs"] for t in job["tasks"] if t["state"] == "completed"}


def test_emulate_prints_the_plain_loops_aggregate_and_leaves_nothing_running(kit):
    done = kit.run("--backend", "azure", "--emulate", "--run", "rehearsal", env={**NO_ENGINE, **REAL_ACCOUNT})
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == plain_loop(kit.path)
    no_engine = [line for line in done.stderr.splitlines() if "no Docker engine answers" in line]
    assert len(no_engine) == 1, done.stderr
    assert_nothing_left(kit)
    # The account lives in the run folder, never with a secret in it.
    emulated = kit.run_dir("rehearsal") / "emulated"
    state = json.loads((emulated / "batch-state.json").read_text())
    assert [job["state"] for job in state["jobs"]] == ["completed"]
    # worker.py's chunks: the first wave, one chunk per slot (here one), held all four iterations
    assert [t["state"] for t in state["jobs"][0]["tasks"]] == ["completed"]
    assert (emulated / "azurite").is_dir()


def test_a_bad_emulate_option_is_one_line_and_exit_2(kit):
    for option in ("bogus=1", "quota=cores=1", "allocation=sometimes", "task-overhead=-1"):
        done = kit.run("--backend", "azure", "--emulate", option, "--run", "bad", env=NO_ENGINE)
        assert done.returncode == 2, (option, done.stderr)
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "--emulate" in errors[0], done.stderr
        assert "Traceback" not in done.stderr
        if option.startswith("task-overhead"):  # passed on: the emulator itself refuses the value
            assert errors[0] == "error: --emulate: task_overhead is seconds, not negative", errors
    assert_nothing_left(kit)


def test_emulate_needs_the_azure_backend(kit):
    done = kit.run("--emulate", "--run", "local", env=NO_ENGINE)
    assert done.returncode == 2
    assert last_line(done.stderr) == "error: --emulate rehearses the azure backend: add --backend azure"


def test_sigkill_then_rerun_repeats_nothing(kit):
    kit.write_task(SLOW_TASK)
    log = kit.path / "side-effects.log"
    env = {**os.environ, **NO_ENGINE}
    proc = subprocess.Popen(kit.command("--backend", "azure", "--emulate", "--run", "killed", "--chunk", "1"), cwd=kit.path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(completed_tasks(kit, "killed")) < 2:  # the emulated account has completed some tasks
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert_nothing_left(kit)  # Azurite and the emulator died with the controller
    azurite_log = (kit.run_dir("killed") / "emulated" / "azurite.log").read_text()
    assert azurite_log.count("successfully closed") == azurite_log.count("is closing"), azurite_log  # its blobs' metadata saved
    done_before = completed_tasks(kit, "killed")
    assert len(done_before) < 8, "every task ended before the kill"
    ran_before = log.read_text().split()
    assert len(done_before) >= 2

    again = kit.run("--backend", "azure", "--emulate", "--run", "killed", "--chunk", "1", env=NO_ENGINE)
    assert again.returncode == 0, again.stderr
    runs = log.read_text().split()  # before the plain loop adds its own lines
    assert last_line(again.stdout) == plain_loop(kit.path)
    rerun = runs[len(ran_before):]
    # Whatever the emulated account had completed is not run again; each task ran to its end.
    assert not done_before & {int(i) for i in rerun}, (done_before, rerun)
    assert sorted({int(i) for i in runs}) == list(range(8))
    assert "creating pool" not in again.stderr and "creating job" not in again.stderr, again.stderr
    assert_nothing_left(kit)


def test_with_an_engine_tasks_run_in_the_image_and_ctrl_c_leaves_no_container(kit, tmp_path):
    """--build as for the cloud; the emulated pool runs the local image. Ctrl-C
    mid-run stops the account and its containers; the same --run finishes."""
    import uuid

    from superbatch.image import image_exists
    from tests.support.needs import Need, missing

    base = os.environ.get("SUPERBATCH_TEST_BASE_IMAGE", "superbatch-base:bookworm")
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as error:
        missing(Need.ENGINE, str(error))
    if not image_exists(client, base):
        missing(Need.BASE_IMAGE, f"the base image {base} is not in the Docker engine")
    kit.write_task(SLOW_TASK.replace('os.path.join(os.path.dirname(os.path.abspath(__file__)), "side-effects.log")', '"/tmp/side-effects.log"'))
    image = f"superbatch-emulate-{uuid.uuid4().hex[:8]}:test"
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST" or v}

    def containers() -> list:
        return [c.name for c in client.containers.list(all=True) if any(str(kit.path) in (m.get("Source") or "") for m in c.attrs.get("Mounts", []))]

    try:
        # --chunk 1: results come home task by task, so the Ctrl-C lands while tasks
        # still run (a chunk's results come home together, when it ends)
        proc = subprocess.Popen(kit.command("--backend", "azure", "--emulate", "--run", "boxed", "--build", "--base-image", base, "--image", image, "--chunk", "1"),
                                cwd=kit.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while len(list(kit.run_dir("boxed").glob("task_*_output.pickle"))) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert "no Docker engine" not in err
        assert "waits in the emulated account, stopped with the run" in err
        state = json.loads((kit.run_dir("boxed") / "emulated" / "batch-state.json").read_text())
        ran = [t for job in state["jobs"] for t in job["tasks"] if t["state"] == "completed"]
        assert ran and all((t["container_info"] or {}).get("containerId") for t in ran), "the tasks did not run in containers"
        assert_nothing_left(kit)
        assert containers() == []

        again = kit.run("--backend", "azure", "--emulate", "--run", "boxed", "--image", image, "--chunk", "1", env=env)
        assert again.returncode == 0, again.stderr
        assert last_line(again.stdout) == plain_loop(kit.path)
        assert containers() == []
        assert_nothing_left(kit)
    finally:
        try:
            client.images.remove(image, force=True)
        except Exception:
            pass


def test_a_quota_of_zero_cores_ends_with_the_kits_quota_message(kit):
    done = kit.run("--backend", "azure", "--emulate", "quota=dedicated-cores=0", "--run", "no-cores", env=NO_ENGINE, timeout=240)
    assert done.returncode != 0, done.stderr
    assert "core quota is reached" in last_line(done.stderr) and "AccountCoreQuotaReached" in last_line(done.stderr), done.stderr
    assert "Traceback" not in done.stderr
    assert_nothing_left(kit)


def listening(port: int) -> socket.socket:
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    return holder


def test_the_runs_storage_port_is_waited_for_never_swapped(tmp_path):
    """Tasks' SAS URLs name the run's storage port: a port still held (an
    earlier session's Azurite closing) is waited for, then refused in one line."""
    record = tmp_path / "storage-port"
    port = _free_port()
    record.write_text(str(port))
    holder = listening(port)
    threading.Timer(1.0, holder.close).start()
    assert _run_port(record, wait=10) == port
    with listening(port):
        with pytest.raises(SuperbatchError) as error:
            _run_port(record, wait=1)
    assert str(error.value) == (f"the run's storage port 127.0.0.1:{port} (in {record}) is still in use after 1 s, and its tasks' "
                                "download links name it: stop what holds it, then run again")
    assert record.read_text() == str(port)


def test_a_busy_storage_port_stops_the_run_with_one_line(kit):
    port = _free_port()
    (kit.run_dir("held") / "emulated").mkdir(parents=True)
    (kit.run_dir("held") / "emulated" / "storage-port").write_text(str(port))
    with listening(port):
        done = kit.run("--backend", "azure", "--emulate", "--run", "held", env=NO_ENGINE)
    assert done.returncode != 0
    assert last_line(done.stderr) == (f"error: the run's storage port 127.0.0.1:{port} (in {kit.run_dir('held') / 'emulated' / 'storage-port'}) "
                                      "is still in use after 10 s, and its tasks' download links name it: stop what holds it, then run again")
    assert "Traceback" not in done.stderr
    assert_nothing_left(kit)


def test_the_storage_guard_stops_azurite_only_after_the_emulator_ended(tmp_path):
    """A controller's death signals the guard and the emulator at once: Azurite
    must keep serving until the emulator (here a stand-in process) has ended,
    then close (its metadata saved), not be cut off."""
    stand_in = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    pid_file = tmp_path / "emulator.pid"
    pid_file.write_text(str(stand_in.pid))
    port = _free_port()
    log = tmp_path / "azurite.log"
    with open(log, "wb") as out:
        guard = subprocess.Popen([sys.executable, "-m", "superbatch.storage_guard", str(pid_file), azurite_command(REPO),
                                  "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(tmp_path / "data"),
                                  "--silent", "--disableTelemetry"], cwd=REPO, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and guard.poll() is None, log.read_text()
                time.sleep(0.05)
        guard.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        socket.create_connection(("127.0.0.1", port), timeout=1).close()  # still serving: the emulator has not ended
        assert "closing" not in log.read_text()
        stand_in.stdin.close()  # the stand-in ends, a zombie until reaped below: ended all the same
        assert guard.wait(timeout=30) == 0
        stand_in.wait()
        assert log.read_text().strip().splitlines()[-1] == "Azurite Blob service successfully closed"
    finally:
        for proc in (guard, stand_in):
            if proc.poll() is None:
                proc.kill()
