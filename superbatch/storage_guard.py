"""Azurite under a guard: python -m superbatch.storage_guard PID_FILE AZURITE_ARGV...

--emulate starts this in Azurite's place (with the controller's parent-death
signal). On SIGTERM, from the controller's normal stop or from its death, the
guard stops the account in the normal stop's order: it waits for the Batch
emulator (its pid in PID_FILE, written by emulate.py once it started) to save
its state and end its tasks, and only then stops Azurite and waits for it to
close. Azurite saves its blobs' metadata only every 5 s or when it closes;
signalled together with the emulator (both dying with a killed controller), it
sometimes logged "closing..." and never closed, losing the last uploads.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

WAIT = 30.0  # seconds for the emulator to end, then for Azurite to close


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a dead emulator nobody has reaped yet is a zombie: gone for us
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _emulator_pid(pid_file: Path):
    try:
        return int(pid_file.read_text())
    except (OSError, ValueError):
        return None  # the emulator never started


def _die_with_guard() -> None:
    """In Azurite, before exec: SIGTERM should the guard itself be killed."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        os._exit(1)


def stop(azurite: subprocess.Popen, pid_file: Path) -> None:
    """The emulator ended (or 30 s passed), then Azurite closed (or killed after 30 s)."""
    pid = _emulator_pid(pid_file)
    deadline = time.monotonic() + WAIT
    while pid and _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    azurite.terminate()
    try:
        azurite.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        print(f"storage guard: Azurite did not close within {WAIT:.0f} s: killed", flush=True)
        azurite.kill()
        azurite.wait()


def main(pid_file: Path, argv: list) -> int:
    azurite = subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=_die_with_guard)
    # The stop runs here, not in the handler: the handler would interrupt
    # azurite.wait(), whose lock a second wait could then never take.
    signalled = []
    signal.signal(signal.SIGTERM, lambda signum, frame: signalled.append(signum))
    while azurite.poll() is None:
        if signalled:
            stop(azurite, pid_file)
            return 0
        time.sleep(0.1)
    return azurite.returncode  # Azurite ended by itself (at start, say): its code is the guard's


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2:]))
