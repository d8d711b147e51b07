"""Two fixes the fault and scale runs called for, checked without a server:
the blob client retries soon after a failure, and uploads queue only a few
files per thread, whatever the number of files."""

import threading
import time
from types import SimpleNamespace

from superbatch.backends.azure.storage import BlobStore, retry_policy


def test_a_failed_blob_request_is_retried_after_seconds_not_15():
    policy = retry_policy()
    waits = [policy.initial_backoff + (0 if count == 0 else policy.increment_base ** count) for count in range(policy.total_retries)]
    assert waits == [2, 4, 6, 10, 18, 34]  # about a minute of retrying in all
    assert policy.random_jitter_range == 1


def test_uploads_draw_files_as_threads_free_up(tmp_path):
    threads = 4
    drawn = 0
    uploaded = 0
    ahead = []
    lock = threading.Lock()

    def files():
        nonlocal drawn
        for index in range(2_000):
            drawn += 1
            yield (f"task_{index}", str(tmp_path / "input"), "hash")

    def upload_blob(name, data, **kwargs):
        nonlocal uploaded
        time.sleep(0.0005)
        with lock:
            ahead.append(drawn - uploaded)
            uploaded += 1

    (tmp_path / "input").write_bytes(b"x")
    store = BlobStore.__new__(BlobStore)
    store.settings = SimpleNamespace(threads=threads)
    store.container = SimpleNamespace(upload_blob=upload_blob)
    assert store.upload_files(files()) == 2_000
    assert uploaded == 2_000
    assert max(ahead) <= 4 * threads + threads  # queued plus running, never the whole list
