"""SharedKey authentication, api-version, and the unauthenticated stats endpoint."""

import json
import urllib.request

import pytest
from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError

from batch_emulator.server import new_key


def test_wrong_key_is_refused(emulator):
    with BatchClient(emulator.endpoint, AzureNamedKeyCredential(emulator.account, new_key())) as c:
        with pytest.raises(HttpResponseError) as info:
            list(c.list_jobs())
    assert info.value.status_code == 403 and info.value.error.code == "AuthenticationFailed"


def test_wrong_account_is_refused(emulator):
    with BatchClient(emulator.endpoint, AzureNamedKeyCredential("someoneelse", emulator.key)) as c:
        with pytest.raises(HttpResponseError) as info:
            c.get_job("j")
    assert info.value.status_code == 403 and info.value.error.code == "AuthenticationFailed"


def test_unsigned_request_is_refused_with_a_batch_error_body(emulator):
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{emulator.endpoint}/jobs?api-version=2025-06-01")
    body = json.loads(info.value.read())
    assert info.value.code == 403
    assert set(body) >= {"odata.metadata", "code", "message"}
    assert body["code"] == "AuthenticationFailed"
    assert body["message"]["lang"] == "en-US" and "RequestId:" in body["message"]["value"]
    assert info.value.headers["request-id"]


def test_stats_need_no_key(emulator, client):
    list(client.list_jobs())
    with urllib.request.urlopen(f"{emulator.endpoint}/_emulator/stats") as r:
        stats = json.load(r)
    assert stats["requests"]["byOperation"]["Jobs_ListJobs"]["200"] >= 1
    assert stats["requests"]["total"] == sum(stats["requests"]["byStatus"].values())
    assert emulator.stats()["requests"]["byOperation"]["Jobs_ListJobs"]["200"] >= 1


def test_client_request_id_is_echoed(client):
    seen = {}
    list(client.list_jobs(raw_response_hook=lambda r: seen.update(r.http_response.headers)))
    assert seen.get("request-id") and seen.get("client-request-id")
