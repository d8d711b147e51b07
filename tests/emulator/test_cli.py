"""`python -m batch_emulator` serves the SDK as a program of its own."""

import subprocess
import sys
import time

from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential

from batch_emulator.server import new_key
from tests.support.servers import REPO, free_port

from .conftest import pool_options, wait_pool_steady


def test_module_entry_point(tmp_path):
    port, key = free_port(), new_key()
    proc = subprocess.Popen(
        [sys.executable, "-m", "batch_emulator", "--host", "127.0.0.1", "--port", str(port),
         "--account", "cliaccount", "--key", key, "--docker", "off", "--node-startup-delay", "0.01",
         "--faults", "seed=3", "--workdir", str(tmp_path / "nodes")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in banner and "cliaccount" in banner and key not in banner
        with BatchClient(f"http://127.0.0.1:{port}", AzureNamedKeyCredential("cliaccount", key),
                         retry_total=20, retry_backoff_factor=0.1) as c:
            deadline = time.monotonic() + 20
            while True:   # uvicorn may still be binding when the banner is printed
                try:
                    c.create_pool(pool_options("clipool", dedicated=1))
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            assert wait_pool_steady(c, "clipool").current_dedicated_nodes == 1
            assert [p.id for p in c.list_pools()] == ["clipool"]
        assert (tmp_path / "nodes").is_dir()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_bad_options_exit_with_a_message():
    proc = subprocess.run([sys.executable, "-m", "batch_emulator", "--faults", "meteor=1"],
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "unknown fault setting" in proc.stderr
