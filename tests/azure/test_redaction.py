"""Secrets that the Azure SDKs put in their own error messages never reach the
kit's output: stderr, stdout, the summary JSON, run.json or the logs.

A storage service quotes requests back in its error answers (Storage's
AuthenticationFailed quotes the request's signature; a gateway or the
service's AuthorizationFailure message may quote the request line, SAS
included), and azure-storage-blob copies the answer into its exception. Here a
proxy in front of Azurite answers chosen requests that way; everything else is
the real chain: the SDK builds the message, the Batch emulator (for a task's
upload) or the kit (for its own download, or an error it did not foresee)
reports it, the kit prints it.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

import pytest
from starlette.requests import Request
from starlette.responses import Response

from tests.azure.conftest import Cloud
from tests.support.proxy import Proxy, start_proxy
from tests.support.servers import start_batch_emulator
from tests.test_redact import spellings

TWO_TASKS = """
    def global_config(): return 5
    def parameters(): return [1, 2]
    def task(config, p): return config * p
    def aggregate(results): return sum(results)
"""


class RefusingProxy(Proxy):
    """Forwards to Azurite, except that the requests `refuse(method, path, query)` picks
    are answered 403 with a Storage-style XML error that `refuse` writes from the request."""

    def __init__(self, upstream: str, refuse):
        super().__init__(upstream)
        self.refuse = refuse
        self.refused: list = []  # (url, authorization header) of each request refused

    async def forward(self, request: Request) -> Response:
        parts = urlsplit(str(request.url))
        answer = self.refuse(request.method, parts.path, parts.query, request.headers.get("authorization", ""))
        if answer is None:
            return await super().forward(request)
        await request.body()
        self.refused.append((str(request.url), request.headers.get("authorization", "")))
        code, body = answer
        return Response(body, status_code=403, headers={"Content-Type": "application/xml", "x-ms-error-code": code})


@pytest.fixture
def refusing_cloud(azurite):
    started = []

    def make(refuse) -> tuple[Cloud, RefusingProxy]:
        emulator = start_batch_emulator()
        blobs = RefusingProxy(f"http://{azurite.host}:{azurite.port}", refuse).start()
        batch = start_proxy(emulator.endpoint)
        started.extend([batch, blobs, emulator])
        return Cloud(emulator, blobs, batch, azurite), blobs

    yield make
    for server in started:
        server.stop()


def everything_written(kit, done, summary, run: str) -> dict:
    """Where the kit's output goes, by name."""
    found = {"stdout": done.stdout, "stderr": done.stderr, "summary": summary.read_text() if summary.exists() else ""}
    for path in kit.run_dir(run).rglob("*"):
        if path.is_file() and not path.name.endswith(".pickle"):
            found[str(path.relative_to(kit.path))] = path.read_text(errors="replace")
    assert "runs/%s/run.json" % run in found
    return found


def failing_run(kit, cloud, tmp_path, run: str, *flags):
    """The kit's run of TWO_TASKS, which must fail: its process and its summary's path."""
    kit.write_task(TWO_TASKS)
    summary = tmp_path / "summary.json"
    done = cloud.run(kit, run, *flags, "--summary-json", summary)
    assert done.returncode == 1, done.stderr
    return done, summary


def only_failure(summary, index: int) -> str:
    """The failure_info of the summary's one failure, which must be task ``index``'s."""
    report = json.loads(summary.read_text())
    assert [failure["index"] for failure in report["failures"]] == [index]
    return report["failures"][0]["failure_info"]


def refused_macs(blobs) -> set:
    """The SharedKey signatures of the requests the proxy refused."""
    return {authorization.rsplit(":", 1)[1] for _, authorization in blobs.refused}


def assert_nowhere(found: dict, secrets: set) -> None:
    for where, text in found.items():
        for secret in secrets:
            assert secret not in text, f"a secret ({secret[:6]}...) is in the kit's {where}"


def test_sas_quoted_by_storage_in_a_task_upload_failure(kit, refusing_cloud, tmp_path):
    """Batch reports a task's failed output upload with the storage SDK's message,
    which quotes the upload's SAS URL; the kit shows the failure without the signature."""

    def refuse(method, path, query, authorization):
        if method == "PUT" and path.endswith("task_0_output.pickle") and "sig=" in query:
            return "AuthorizationFailure", ('<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthorizationFailure</Code>'
                                            f"<Message>Refused {escape(path + '?' + query)}</Message></Error>")
        return None

    cloud, blobs = refusing_cloud(refuse)
    done, summary = failing_run(kit, cloud, tmp_path, "r1", "--debug")
    assert len(blobs.refused) == 1  # the emulator's upload of task 0's output, signed with the run's SAS
    sig = parse_qs(urlsplit(blobs.refused[0][0]).query)["sig"][0]
    assert_nowhere(everything_written(kit, done, summary, "r1"), spellings(sig))

    # the SDK's message did come through, with the signature taken out
    info = only_failure(summary, 0)
    assert "FileUploadMiscError" in info and "sig=REDACTED" in info
    assert "task_0_output.pickle" in info  # which blob failed stays readable
    assert "sig=REDACTED" in done.stderr


def test_request_signature_quoted_by_storage_when_fetching_an_output(kit, refusing_cloud, tmp_path):
    """Storage's AuthenticationFailed answer quotes the request's SharedKey signature
    ("The MAC signature found in the HTTP request '...'"); the kit's download of an
    output meets it, and reports the failure without the signature."""

    def refuse(method, path, query, authorization):
        if method == "GET" and path.endswith("task_1_output.pickle") and authorization.startswith("SharedKey "):
            mac = authorization.rsplit(":", 1)[1]
            return "AuthenticationFailed", (
                '<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed</Code>'
                "<Message>Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.</Message>"
                f"<AuthenticationErrorDetail>The MAC signature found in the HTTP request '{mac}' is not the same as any computed signature. "
                f"Server used following string to sign: 'GET\n\n\n{escape(path)}'.</AuthenticationErrorDetail></Error>")
        return None

    cloud, blobs = refusing_cloud(refuse)
    done, summary = failing_run(kit, cloud, tmp_path, "r2", "--debug")
    assert blobs.refused, "the kit's download of task 1's output was refused"
    assert_nowhere(everything_written(kit, done, summary, "r2"), refused_macs(blobs))

    info = only_failure(summary, 1)
    assert "its output could not be fetched" in info and "MAC signature found in the HTTP request 'REDACTED'" in info
    assert "MAC signature found in the HTTP request 'REDACTED'" in done.stderr


def test_unforeseen_sdk_error_is_printed_without_its_secret(kit, refusing_cloud, tmp_path):
    """An SDK error the kit does not explain (here the listing of the staged inputs,
    answered with a status the kit has no message for) still leaves through redact():
    its traceback quotes Storage's answer, which quotes the request's signature."""

    def refuse(method, path, query, authorization):
        if method == "GET" and "comp=list" in query and authorization.startswith("SharedKey "):
            mac = authorization.rsplit(":", 1)[1]
            return "AuthenticationFailed", (
                '<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed</Code>'
                "<Message>Server failed to authenticate the request.</Message>"
                f"<AuthenticationErrorDetail>The MAC signature found in the HTTP request '{mac}' is not the same as any computed signature.</AuthenticationErrorDetail></Error>")
        return None

    cloud, blobs = refusing_cloud(refuse)
    done, summary = failing_run(kit, cloud, tmp_path, "r3")
    assert blobs.refused, "the listing of the staged inputs was refused"
    assert_nowhere(everything_written(kit, done, summary, "r3"), refused_macs(blobs))
    assert "Traceback" in done.stderr  # the SDK's error as it came, but
    assert "MAC signature found in the HTTP request 'REDACTED'" in done.stderr
