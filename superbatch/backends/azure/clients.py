"""Building the Azure SDK clients, and turning their errors into one-line ones."""

import requests
from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError, ServiceRequestError
from azure.core.pipeline.transport import RequestsTransport

from ...errors import SuperbatchError
from ...redact import redact


def transport(connections: int) -> RequestsTransport:
    """An HTTP transport whose connection pool is as large as our thread pools
    (requests keeps only 10 per host by default, and reconnects past that)."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=connections)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return RequestsTransport(session=session, session_owner=True, connection_timeout=20, read_timeout=120)


def error_code(error: Exception) -> str:
    """The service's error code (e.g. AuthenticationFailed), wherever the SDK put it."""
    code = getattr(error, "error_code", None)  # azure-storage-blob: an enum
    if not code and getattr(error, "model", None) is not None:  # azure-batch: the BatchError body
        code = getattr(error.model, "code", None)
    if not code and isinstance(error, HttpResponseError) and error.error is not None:
        code = error.error.code
    return str(getattr(code, "value", code) or "")


def explain(error: Exception, doing: str, hint: str = "") -> SuperbatchError:
    """A one-line SuperbatchError for an Azure SDK error met while `doing`."""
    if type(error).__name__ == "CredentialUnavailableError" or "DefaultAzureCredential failed" in str(error):
        # azure-identity found no sign-in to get a token with
        detail = "no Microsoft Entra ID sign-in is available (run `az login`, or set the account key)"
    elif isinstance(error, ServiceRequestError):
        detail = "the endpoint does not answer (check the endpoint variable and your network)"
    elif isinstance(error, ClientAuthenticationError) or getattr(error, "status_code", None) in (401, 403) or error_code(error) in ("AuthenticationFailed", "AuthorizationFailure", "AuthorizationPermissionMismatch"):
        detail = f"access denied ({error_code(error) or _status_name(error)}): check the account key or your Entra ID sign-in"
    elif isinstance(error, HttpResponseError):
        message = (error.error.message if error.error is not None and error.error.message else str(error.message or error))
        detail = f"{error_code(error) or error.status_code}: {message.splitlines()[0] if message else ''}"
    elif isinstance(error, AzureError):
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    else:
        detail = f"{type(error).__name__}: {error}"
    return SuperbatchError(redact(f"{doing} failed: {detail}" + (f"; {hint}" if hint else "")))


def _status_name(error: Exception) -> str:
    status = getattr(error, "status_code", None)
    return {401: "401 Unauthorized", 403: "403 Forbidden"}.get(status, type(error).__name__)
