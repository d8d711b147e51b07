"""SharedKey authentication, api-version, and the unauthenticated stats endpoint.

AuthenticationFailed (403) and the error body's shape come from Microsoft's
"Batch status and error codes" page; the stats endpoint is the emulator's own."""

import json
import urllib.request

import pytest
from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError

from batch_emulator.server import new_key
from tests.support.proxy import start_proxy


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


def test_stats_need_no_key_and_count_what_the_client_sent(emulator):
    proxy = start_proxy(emulator.endpoint)   # counts the requests apart from the emulator
    try:
        with urllib.request.urlopen(f"{emulator.endpoint}/_emulator/stats") as r:
            before = json.load(r)["requests"]["byOperation"].get("Jobs_ListJobs", {}).get("200", 0)
        with BatchClient(proxy.url, emulator.credential()) as c:
            for _ in range(3):
                list(c.list_jobs())
        sent = proxy.count("GET", "/jobs")
    finally:
        proxy.stop()
    after = emulator.stats()["requests"]["byOperation"]["Jobs_ListJobs"]["200"]
    assert sent == 3 and after - before == sent


def test_client_request_id_is_echoed_only_when_asked(client):
    # The REST description: client-request-id comes back "only if the
    # return-client-request-id parameter was set to true"; no recorded answer
    # echoed it unasked (tests/emulator/recorded/pools.json).
    sent, seen = {}, {}

    def hook(r):
        sent.update(r.http_request.headers)
        seen.update(r.http_response.headers)

    list(client.list_jobs(raw_response_hook=hook))
    assert sent.get("client-request-id") and seen.get("request-id") and "client-request-id" not in seen
    sent.clear(), seen.clear()
    list(client.list_jobs(raw_response_hook=hook, headers={"return-client-request-id": "true"}))
    assert seen.get("client-request-id") == sent["client-request-id"]
