"""--emulate: the azure backend against an account on this machine.

    with emulated_account(run_folder, options, kit_dir) as environ:
        ...  # the azure backend reads its settings from environ, not os.environ

starts Azurite (blob storage) and the Batch emulator (batch_emulator/, beside
controller.py) as child processes on free ports, their data in
runs/<run>/emulated/, and stops them when the run ends, however it ends. Both
are started with a parent-death signal, so even a controller killed with
SIGKILL takes them (and the tasks and containers the emulator ends on its
way out) with it, in the normal stop's order: Azurite runs under a guard
(storage_guard.py) that stops it once the emulator has ended.

Nothing of the user's environment is read for the account: a real account's
variables are ignored and left as they are. Azurite's account key is its
published development key (not a secret); the Batch emulator's key is new
each time the emulator starts, handed to it in its environment, never written.

A resumed run finds its account as it was: Azurite keeps its data in
emulated/azurite/, the emulator its pools, jobs and tasks in
emulated/batch-state.json (batch_emulator/persistence.py).
"""

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import SuperbatchError, UsageError
from .progress import say

# The emulator's options that --emulate passes on, as its command line names them.
OPTIONS = ("quota", "faults", "allocation", "delete-delay", "counts-lag", "node-startup-delay", "preempt-recovery", "autoscale-interval",
           "task-overhead")
ACCOUNT = "emulated"
# Azurite's published development account (in every storage SDK's docs).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
EMULATED_POLL_INTERVAL = 0.5  # seconds; a local account answers at once
START_TIMEOUT = 60.0
PORT_WAIT = 10.0  # seconds for the run's storage port to be free


def parse_options(text: str) -> list:
    """'quota=dedicated-cores=0,pools=1 faults=preempt=0.3' -> the emulator's
    flags. Options are separated by spaces or commas; a comma-separated part
    that names no option belongs to the one before (quota and faults take
    comma-separated values themselves)."""
    options: list = []
    for word in text.replace(",", " , ").split():
        if word == ",":
            continue
        key, eq, value = word.partition("=")
        if key in OPTIONS and eq:
            options.append([key, value])
        elif options and eq and options[-1][0] in ("quota", "faults"):
            options[-1][1] += "," + word
        else:
            raise UsageError(f"--emulate {text!r}: {word!r} is not one of {', '.join(o + '=...' for o in OPTIONS)}")
    flags = []
    for key, value in options:
        if not value:
            raise UsageError(f"--emulate: {key}= needs a value")
        flags += [f"--{key}", value]
    return flags


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
        return True
    except Exception:  # no SDK, no engine, no permission: all mean "run on the host"
        return False


def _run_port(record: Path, wait: float = PORT_WAIT) -> int:
    """The port of the run's storage, the same in every session: the SAS URLs
    of tasks and of the job preparation task, fixed when they were added, name
    it (a real account's endpoint never moves). A port still held (by the last
    session's Azurite, closing) is waited for, never swapped for another."""
    try:
        port = int(record.read_text())
    except (OSError, ValueError):  # the run's first session
        port = _free_port()
        record.write_text(str(port))
        return port
    deadline = time.monotonic() + wait
    while True:
        try:
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Azurite binds it: a port in TIME_WAIT is free
                probe.bind(("127.0.0.1", port))
            return port
        except OSError:
            if time.monotonic() >= deadline:
                raise SuperbatchError(f"the run's storage port 127.0.0.1:{port} (in {record}) is still in use after {wait:.0f} s, and "
                                      "its tasks' download links name it: stop what holds it, then run again") from None
            time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the controller dies, even by SIGKILL (Linux)."""
    os.setsid()  # Ctrl-C in the terminal reaches the controller, which stops the children in order
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the controller died before prctl took effect
        os._exit(1)


def azurite_command(kit_dir: Path) -> str:
    local = kit_dir / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    found = shutil.which("azurite-blob")
    if found:
        return found
    if not shutil.which("node"):
        raise SuperbatchError("--emulate needs Node.js for Azurite, the storage emulator: install Node.js 18 or later (with npm), then run `make cloud`")
    raise SuperbatchError(f"--emulate needs Azurite, the storage emulator: run `npm ci` in {kit_dir} (or `make cloud`)")


class _Child:
    def __init__(self, name: str, argv: list, log: Path, env: dict):
        self.name, self.log = name, log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                                         preexec_fn=_die_with_parent, close_fds=True)

    def wait_for(self, port: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                last = _last_line(self.log)
                if self.proc.returncode == 2:  # the emulator refused an option (its own check or argparse's)
                    raise UsageError(f"--emulate: {last.split('batch_emulator: ', 1)[-1].removeprefix('error: ')}")
                raise SuperbatchError(f"the emulated {self.name} stopped at start (exit code {self.proc.returncode}): {last or 'no message'} (log: {self.log})")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise SuperbatchError(f"the emulated {self.name} did not answer within {START_TIMEOUT:.0f} s (log: {self.log})")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # the emulator then ends its tasks and containers and saves its state
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


@contextmanager
def emulated_account(run_folder: Path, options, kit_dir: Path):
    """Start the emulated account for this run and yield the environment the
    azure settings read; see the module's doc. Also adapts options: tasks run
    on the host when no Docker engine answers (options.tasks_on_host), and the
    job is polled often unless --poll-interval was given."""
    flags = parse_options(options.emulate or "")
    if not (kit_dir / "batch_emulator" / "__main__.py").exists():
        raise SuperbatchError(f"--emulate needs the Batch emulator, batch_emulator/ beside controller.py in {kit_dir} (it comes with the kit's repository)")
    azurite = azurite_command(kit_dir)
    folder = Path(run_folder) / "emulated"
    (folder / "azurite").mkdir(parents=True, exist_ok=True)

    argv = list(getattr(options, "argv", []))
    if "--poll-interval" not in argv and not any(a.startswith("--poll-interval=") for a in argv):
        options.poll_interval = EMULATED_POLL_INTERVAL
    docker = _docker_answers()
    if not docker:
        say("no Docker engine answers: the emulated pool runs each task on this machine (this Python and worker.py), not in the worker image", options.quiet)
        options.tasks_on_host = True  # the azure backend's task command: worker.py (or WORKER) here, not in /app

    key = base64.b64encode(os.urandom(64)).decode()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCH_", "STORAGE_", "REGISTRY_"))}
    children = []
    try:
        blob_port = _run_port(folder / "storage-port")
        # Azurite runs under a guard that, should the controller die, stops it
        # only after the emulator (pid in this file) ended: storage_guard.py.
        emulator_pid = folder / "batch-emulator.pid"
        emulator_pid.unlink(missing_ok=True)
        package_dir = str(Path(__file__).resolve().parent.parent)
        children.append(_Child("storage (Azurite)", [
            sys.executable, "-m", "superbatch.storage_guard", str(emulator_pid),
            azurite, "--blobHost", "127.0.0.1", "--blobPort", str(blob_port), "--location", str(folder / "azurite"),
            "--silent", "--skipApiVersionCheck", "--loose", "--disableTelemetry"], folder / "azurite.log",
            {**child_env, "PYTHONPATH": os.pathsep.join(filter(None, [package_dir, child_env.get("PYTHONPATH")]))}))
        deadline = time.monotonic() + START_TIMEOUT
        # Storage answers before the Batch account starts: an account restored
        # from its state file runs its waiting tasks (and their downloads) at once.
        children[0].wait_for(blob_port, deadline)
        batch_port = _free_port()
        children.append(_Child("Batch account", [
            sys.executable, "-m", "batch_emulator", "--host", "127.0.0.1", "--port", str(batch_port),
            "--account", ACCOUNT, "--docker", "on" if docker else "off",
            "--workdir", str(folder / "batch"), "--state-file", str(folder / "batch-state.json"), *flags],
            folder / "batch-emulator.log",
            {**child_env, "BATCH_EMULATOR_KEY": key, "PYTHONPATH": os.pathsep.join(filter(None, [str(kit_dir), child_env.get("PYTHONPATH")]))}))
        emulator_pid.write_text(str(children[1].proc.pid))
        children[1].wait_for(batch_port, deadline)
        say(f"emulated account: Batch on 127.0.0.1:{batch_port}, storage on 127.0.0.1:{blob_port}, data in {folder}", options.quiet)
        yield {
            "BATCH_ACCOUNT_NAME": ACCOUNT,
            "BATCH_ACCOUNT_KEY": key,
            "BATCH_ACCOUNT_ENDPOINT": f"http://127.0.0.1:{batch_port}",
            "STORAGE_ACCOUNT_CONNECTION_STRING": (
                f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{blob_port}/{AZURITE_ACCOUNT};"),
        }
    finally:
        for child in reversed(children):  # the emulator first: its tasks may still be writing to storage
            child.stop()
