"""Start the services tests talk to, on free ports, and stop them again.

    from tests.support.servers import start_azurite, start_batch_emulator

    with start_azurite() as storage:          # Azurite blob service, temp dir
        storage.connection_string
    with start_batch_emulator(docker="off") as batch:
        client = batch.client()               # azure.batch.BatchClient

Both return handles usable as context managers; ``stop()`` is idempotent.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from batch_emulator import EmulatorHandle, start_emulator

REPO = Path(__file__).resolve().parents[2]
# Azurite's published development account (not a secret: it is in every SDK's docs).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_command() -> str | None:
    """The azurite-blob executable: the project's node_modules first, then PATH."""
    local = REPO / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    return shutil.which("azurite-blob")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _wait_for_port(host: str, port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"azurite exited with code {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"azurite did not listen on {host}:{port} within {timeout} s")


@dataclass
class AzuriteHandle:
    host: str
    port: int
    location: Path
    proc: subprocess.Popen
    _owns_location: bool = True

    account = AZURITE_ACCOUNT
    key = AZURITE_KEY

    @property
    def blob_endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/{self.account}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={self.account};AccountKey={self.key};"
                f"BlobEndpoint={self.blob_endpoint};")

    def blob_service(self):
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._owns_location:
            shutil.rmtree(self.location, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()


def start_azurite(location: str | Path | None = None, host: str = "127.0.0.1",
                  timeout: float = 30.0) -> AzuriteHandle:
    """Start Azurite's blob service on a free port; raises RuntimeError if it cannot."""
    command = azurite_command()
    if command is None:
        raise RuntimeError("azurite-blob not found (run `npm install azurite@3` in the repository)")
    owns = location is None
    location = Path(location or tempfile.mkdtemp(prefix="azurite-"))
    port = free_port(host)
    proc = subprocess.Popen(
        [command, "--blobHost", host, "--blobPort", str(port), "--location", str(location),
         "--silent", "--skipApiVersionCheck", "--loose", "--disableTelemetry"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ},
        start_new_session=True)
    handle = AzuriteHandle(host, port, location, proc, owns)
    try:
        _wait_for_port(host, port, proc, timeout)
    except RuntimeError as e:
        err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.poll() is not None else ""
        handle.stop()
        raise RuntimeError(f"{e}\n{err}") from None
    return handle


def kit_environment(account: str, key: str, batch_endpoint: str, blob_endpoint: str) -> dict:
    """The variables the kit's azure backend reads, for an emulator account at
    batch_endpoint and Azurite's account at blob_endpoint (http://host:port/devstoreaccount1)."""
    return {
        "BATCH_ACCOUNT_NAME": account,
        "BATCH_ACCOUNT_KEY": key,
        "BATCH_ACCOUNT_ENDPOINT": batch_endpoint,
        "STORAGE_ACCOUNT_CONNECTION_STRING": (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};BlobEndpoint={blob_endpoint};"),
    }


def start_batch_emulator(**kwargs) -> EmulatorHandle:
    """The Batch emulator in this process on a free port (see batch_emulator.start_emulator).

    Defaults suit tests: short node start-up, Docker off unless asked for.
    """
    kwargs.setdefault("node_startup_delay", 0.05)
    kwargs.setdefault("docker", "off")
    return start_emulator(**kwargs)
