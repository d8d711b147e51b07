"""redact() over every secret form the kit meets, and what it must leave alone.

The SAS URLs and account keys are made the way the kit makes them (the
storage SDK's generate_*_sas with a random key), and the SDK's exceptions
come from the SDK itself, talking to a small local server that answers the
way a service does when it quotes the request back.
"""

import base64
import json
import os
import threading
import traceback
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote
from xml.sax.saxutils import escape

import pytest
from azure.storage.blob import BlobSasPermissions, ContainerClient, ContainerSasPermissions, generate_blob_sas, generate_container_sas

from superbatch.redact import SECRET_VARIABLES, redact

KEY = base64.b64encode(os.urandom(64)).decode()  # the shape of a Batch or storage account key
ACCOUNT = "devstoreaccount1"
BLOB_URL = f"https://{ACCOUNT}.blob.core.windows.net/superbatch-sweep/sweep/task_7_resource.pickle"
EXPIRY = datetime.now(timezone.utc) + timedelta(hours=1)


@pytest.fixture(autouse=True)
def no_secret_variables(monkeypatch):
    """The patterns alone, unless a test sets a variable."""
    for name in SECRET_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def blob_sas() -> str:
    return generate_blob_sas(ACCOUNT, "superbatch-sweep", "sweep/task_7_resource.pickle", account_key=KEY,
                             permission=BlobSasPermissions(read=True), expiry=EXPIRY)


def signature(sas: str) -> str:
    """The sig value of a SAS query string, as it appears in the URL (percent-encoded)."""
    return next(part for part in sas.split("&") if part.startswith("sig="))[len("sig="):]


def spellings(sig: str) -> set:
    """The ways a signature may be written: raw base64, or its / + = percent-encoded or not."""
    raw = unquote(sig)
    return {raw, quote(raw, safe=""), quote(raw, safe="/"), sig}


def assert_hidden(text: str, *secrets: str) -> str:
    out = redact(text)
    for secret in secrets:
        assert secret not in out, f"{secret!r} survived in {out!r}"
    assert "REDACTED" in out
    return out


# --- SAS query strings ------------------------------------------------------------

def test_sas_url_keeps_its_path_and_other_parameters():
    sas = blob_sas()
    out = assert_hidden(f"Downloading {BLOB_URL}?{sas} failed", *spellings(signature(sas)))
    assert out.startswith(f"Downloading {BLOB_URL}?")  # which blob failed stays readable
    assert out.endswith(" failed")
    for part in sas.split("&"):
        if not part.startswith("sig="):
            assert part in out  # expiry, permissions, version: not secrets
    assert "sig=REDACTED" in out


def test_container_sas_for_outputs():
    sas = generate_container_sas(ACCOUNT, "superbatch-sweep", account_key=KEY,
                                 permission=ContainerSasPermissions(create=True, write=True), expiry=EXPIRY)
    assert_hidden(f"https://{ACCOUNT}.blob.core.windows.net/superbatch-sweep?{sas}", signature(sas))


def test_sig_as_first_parameter_and_in_any_case():
    assert redact("GET /c/b?sig=abc%2Bdef%3D&sp=r") == "GET /c/b?sig=REDACTED&sp=r"
    assert redact("GET /c/b?SIG=abc+def/ghi=") == "GET /c/b?SIG=REDACTED"


def test_percent_encoded_sas_url():
    # a whole SAS URL as the value of another URL's query parameter
    sas = blob_sas()
    encoded = quote(f"{BLOB_URL}?{sas}", safe="")
    assert "sig%3D" in encoded
    out = assert_hidden(f"https://proxy.example/fetch?url={encoded}&then=1", signature(sas), quote(signature(sas), safe=""))
    assert out.endswith("&then=1")
    assert quote(BLOB_URL, safe="") in out


def test_sas_url_in_a_json_error_body():
    sas = blob_sas()
    body = json.dumps({"odata.metadata": "https://acct.westeurope.batch.azure.com/$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element",
                       "code": "InvalidPropertyValue",
                       "message": {"lang": "en-US", "value": "The value provided for one of the properties in the request body is invalid."},
                       "values": [{"key": "PropertyName", "value": "httpUrl"}, {"key": "PropertyValue", "value": f"{BLOB_URL}?{sas}"}]})
    out = assert_hidden(body, signature(sas))
    assert json.loads(out)["values"][1]["value"].startswith(BLOB_URL)  # still valid JSON, path kept
    # serializers that escape & as \u0026 (.NET's do)
    assert_hidden(body.replace("&", "\\u0026"), signature(sas))


def test_sas_url_in_an_xml_error_body():
    sas = blob_sas()
    body = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed</Code>'
            f"<Message>Server failed to authenticate the request.</Message>"
            f"<AuthenticationErrorDetail>Request {escape(BLOB_URL + '?' + sas)} was refused</AuthenticationErrorDetail></Error>")
    assert "&amp;sig=" in body
    out = assert_hidden(body, signature(sas))
    assert "sig=REDACTED was refused</AuthenticationErrorDetail></Error>" in out  # the XML after the secret is intact


class _EchoingService(BaseHTTPRequestHandler):
    """Answers every request 403 with an XML error that quotes the request line back."""

    def _answer(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = ('<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthorizationFailure</Code>'
                f"<Message>This request is not authorized to perform this operation: {escape(self.command + ' ' + self.path)}</Message></Error>").encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("x-ms-error-code", "AuthorizationFailure")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def echoing_service():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


def test_storage_sdk_error_quoting_a_sas_url(echoing_service):
    """azure-storage-blob's HttpResponseError, its message and its traceback, as
    the kit prints them, when the service quotes the SAS request back."""
    sas = generate_container_sas(ACCOUNT, "superbatch-sweep", account_key=KEY,
                                 permission=ContainerSasPermissions(create=True, write=True), expiry=EXPIRY)
    with ContainerClient.from_container_url(f"{echoing_service}/{ACCOUNT}/superbatch-sweep?{sas}", retry_total=0) as container:
        with pytest.raises(Exception) as caught:
            container.upload_blob("sweep/task_7_output.pickle", b"result", overwrite=True)
    message = str(caught.value)
    secrets = spellings(signature(sas))
    assert any(secret in message for secret in secrets)  # the SDK does quote it: this test is about something real
    out = assert_hidden(message, *secrets)
    assert "/superbatch-sweep/sweep/task_7_output.pickle?" in out  # which blob
    assert "AuthorizationFailure" in out
    assert_hidden("".join(traceback.format_exception(caught.value)), *secrets)


# --- account keys and connection strings -------------------------------------------

def test_connection_string_key():
    connection = f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey={KEY};EndpointSuffix=core.windows.net"
    out = assert_hidden(f"bad connection string {connection!r}", KEY)
    assert out == f"bad connection string 'DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey=REDACTED;EndpointSuffix=core.windows.net'"


def test_account_key_on_its_own():
    # Batch and storage keys alike: 64 bytes in base64, quoted anywhere
    out = assert_hidden(f"credential ('batchacct', '{KEY}') refused", KEY)
    assert out == "credential ('batchacct', 'REDACTED') refused"


def test_keys_from_the_environment_in_any_shape(monkeypatch):
    short_key = base64.b64encode(os.urandom(33)).decode()  # no pattern knows this length
    monkeypatch.setenv("BATCH_ACCOUNT_KEY", short_key)
    storage_key = "not+base64/like=any" + "x" * 20
    monkeypatch.setenv("STORAGE_ACCOUNT_CONNECTION_STRING", f"AccountName=a;AccountKey={storage_key};BlobEndpoint=http://h/a")
    assert_hidden(f"key {short_key} and {quote(short_key, safe='')} in a URL", short_key, quote(short_key, safe=""))
    assert_hidden(f"the key {storage_key}, alone", storage_key)


def test_registry_password(monkeypatch):
    password = "c0rrect-h0rse-battery"
    monkeypatch.setenv("REGISTRY_PASSWORD", password)
    assert_hidden(f"login of 'superbatch' with {password} refused", password)


def test_password_fields_without_the_environment():
    pool = json.dumps({"containerRegistries": [{"registryServer": "myacr.azurecr.io", "username": "myacr", "password": "s3cret/Pass+word"}]})
    out = assert_hidden(pool, "s3cret")
    assert json.loads(out)["containerRegistries"][0] == {"registryServer": "myacr.azurecr.io", "username": "myacr", "password": "REDACTED"}
    assert_hidden(str({"username": "u", "password": "hunter22"}), "hunter22")
    assert_hidden("docker login --password=hunter22 127.0.0.1:5001", "hunter22")


# --- Authorization headers ----------------------------------------------------------

def test_shared_key_header():
    mac = base64.b64encode(os.urandom(32)).decode()
    assert redact(f"Authorization: SharedKey batchacct:{mac}") == "Authorization: SharedKey batchacct:REDACTED"
    assert redact(f"'Authorization': 'SharedKeyLite devstoreaccount1:{mac}'") == "'Authorization': 'SharedKeyLite devstoreaccount1:REDACTED'"


def test_request_signature_quoted_by_storage():
    mac = base64.b64encode(os.urandom(32)).decode()
    detail = f"The MAC signature found in the HTTP request '{mac}' is not the same as any computed signature. Server used following string to sign: 'GET\n\n'."
    out = assert_hidden(detail, mac)
    assert out.startswith("The MAC signature found in the HTTP request 'REDACTED' is not the same")


def test_bearer_token():
    token = ".".join(base64.urlsafe_b64encode(part).decode().rstrip("=") for part in
                     (b'{"typ":"JWT","alg":"RS256"}', b'{"aud":"https://batch.core.windows.net/"}', os.urandom(64)))
    assert redact(f"Authorization: Bearer {token}") == "Authorization: Bearer REDACTED"
    assert_hidden(f"token {token} expired", token.split(".")[2])  # a bare JWT too


# --- what is not a secret -----------------------------------------------------------

@pytest.mark.parametrize("text", [
    "adding tasks to job 'superbatch-sweep' failed: JobNotFound: The specified job does not exist.",
    "https://acct.blob.core.windows.net/superbatch-sweep/sweep/task_7_output.pickle?restype=container&comp=list",
    "runs/sweep/task_12_output.pickle is unreadable (EOFError)",
    "--push: set both REGISTRY_USERNAME and REGISTRY_PASSWORD, or neither",
    "config.pickle hash 3f9a1c0e2b7d4a6f8e1d2c3b4a596877",
    "signature=ok design=fine",
])
def test_leaves_other_text_alone(text):
    assert redact(text) == text
