"""The HTTP surface: authentication, OData options, error bodies and headers.

``BatchResponses.endpoint`` wraps each operation handler with what every
Batch request goes through, in the service's order: count it, check the
api-version and the SharedKey signature, maybe inject a fault, run the
handler, and turn a ``BatchError`` into Batch's error body. The handlers,
one module per resource under ``handlers/``, are small: parse the request,
call the backend, shape the answer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import traceback
import urllib.parse
import uuid

from starlette.requests import Request
from starlette.responses import Response

from . import exceptions as exc
from . import odata
from .handlers.account import AccountHandlers
from .handlers.autoscale import AutoscaleHandlers
from .handlers.files import FileHandlers
from .handlers.jobs import JobHandlers
from .handlers.pools import PoolHandlers
from .handlers.tasks import TaskHandlers
from .models import BatchBackend
from .state.common import API_VERSION, http_date, iso, now_us

log = logging.getLogger("batch_emulator")

JSON_TYPE = "application/json;odata=minimalmetadata"
# Headers the SharedKey scheme signs, in the order they are signed.
SIGNED_HEADERS = ("content-encoding", "content-language", "content-length", "content-md5", "content-type",
                  "date", "if-modified-since", "if-match", "if-none-match", "if-unmodified-since", "range")


def string_to_sign(method: str, raw_path: str, query: str, headers, account: str) -> str:
    """The canonical string a Batch SharedKey signature covers."""
    values = {k.lower(): v for k, v in headers.items() if v}
    if method not in ("GET", "HEAD") and "content-length" not in values:
        values["content-length"] = "0"
    parts = [method] + [values.get(h, "") for h in SIGNED_HEADERS]
    text = "\n".join(parts) + "\n"
    ocp = sorted((k, v) for k, v in values.items() if "ocp-" in k)
    text += "".join(f"{k}:{v}\n" for k, v in ocp)
    text += f"/{account}{raw_path}"
    params = urllib.parse.parse_qs(query)
    for name in sorted(params):
        if params[name][0]:
            text += f"\n{name}:{params[name][0]}"
    return text


def sign(key: str, text: str) -> str:
    digest = hmac.new(base64.b64decode(key), text.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class BatchResponses(PoolHandlers, AutoscaleHandlers, JobHandlers, TaskHandlers, FileHandlers, AccountHandlers):
    def __init__(self, backend: BatchBackend, account: str, key: str):
        self.backend = backend
        self.account = account
        self.key = key
        base64.b64decode(key, validate=True)  # a bad key fails at start, not per request

    def endpoint(self, operation: str, handler):
        async def run(request: Request) -> Response:
            try:
                response = await self._serve(request, operation, handler)
            except exc.BatchError as e:
                response = self.error(request, e)
            except Exception:
                log.error("unexpected error in %s:\n%s", operation, traceback.format_exc())
                response = self.error(request, exc.InternalServerError())
            self.backend.stats.request(operation, response.status_code)
            return response

        run.__name__ = operation
        return run

    async def _serve(self, request: Request, operation: str, handler) -> Response:
        version = request.query_params.get("api-version")
        if not version:
            raise exc.MissingRequiredQueryParameter(values={"QueryParameterName": "api-version"})
        if version != API_VERSION:
            raise exc.UnsupportedApiVersion(values={
                "QueryParameterName": "api-version", "QueryParameterValue": version,
                "Reason": f"The emulator speaks {API_VERSION}."})
        self._authenticate(request)
        body = await request.body()
        fate = self.backend.faults.for_request()
        if fate == "throttle":
            self.backend.stats.fault("throttle")
            raise exc.TooManyRequests(headers={"Retry-After": str(self.backend.faults.retry_after)})
        if fate == "transient-before":
            self.backend.stats.fault("transient-before")
            raise self._transient()
        response = handler(request, body)
        if fate == "transient-after":
            # The change is made, but the client is told it failed.
            self.backend.stats.fault("transient-after")
            raise self._transient()
        return response

    def _transient(self) -> exc.BatchError:
        return exc.ServerBusy() if self.backend.faults.transient_status() == 503 else exc.InternalServerError()

    def _authenticate(self, request: Request) -> None:
        auth = request.headers.get("authorization", "")
        scheme, _, credential = auth.partition(" ")
        account, _, signature = credential.partition(":")
        if scheme != "SharedKey" or not signature:
            raise exc.AuthenticationFailed(values={
                "AuthenticationErrorDetail": "The request carries no SharedKey Authorization header."})
        if account != self.account:
            raise exc.AuthenticationFailed(values={
                "AuthenticationErrorDetail": f"The account {account!r} is not served here."})
        raw_path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        text = string_to_sign(request.method, raw_path, request.scope.get("query_string", b"").decode("latin-1"),
                              request.headers, self.account)
        if not hmac.compare_digest(sign(self.key, text), signature):
            raise exc.AuthenticationFailed(values={
                "AuthenticationErrorDetail": "The MAC signature found in the HTTP request is not the same "
                                             "as any computed signature."})

    def _base(self) -> str:
        return self.backend.base_url

    def _headers(self, request: Request, etag=None, modified=None, data_service_id=None) -> dict:
        headers = {"request-id": str(uuid.uuid4()), "DataServiceVersion": "3.0"}
        # Echoed only when asked: every recorded request sent client-request-id and no
        # recorded answer echoed it (tests/emulator/recorded/pools.json); the REST
        # description ties the echo to return-client-request-id.
        client_id = request.headers.get("client-request-id")
        if client_id and request.headers.get("return-client-request-id", "").lower() == "true":
            headers["client-request-id"] = client_id
        if etag:
            headers["ETag"] = etag
        if modified is not None:
            headers["Last-Modified"] = http_date(modified)
        if data_service_id:
            headers["DataServiceId"] = data_service_id
        return headers

    def json(self, request: Request, body: dict, status: int = 200, **kw) -> Response:
        return Response(json.dumps(body, separators=(",", ":")), status_code=status,
                        media_type=JSON_TYPE, headers=self._headers(request, **kw))

    def empty(self, request: Request, status: int, **kw) -> Response:
        headers = self._headers(request, **kw)
        # Recorded answers: a 201 names the new resource in Location; a 204 says Content-Length: 0.
        if status == 201 and kw.get("data_service_id"):
            headers["Location"] = kw["data_service_id"]
        if status == 204:
            headers["Content-Length"] = "0"
        return Response(b"", status_code=status, headers=headers)

    def error(self, request: Request, e: exc.BatchError) -> Response:
        headers = {**self._headers(request), **e.headers}
        if request.method == "HEAD":
            return Response(b"", status_code=e.status, headers=headers)
        body = e.body(f"{self._base()}/$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element",
                      headers["request-id"], iso(now_us()))
        return Response(json.dumps(body), status_code=e.status, media_type=JSON_TYPE, headers=headers)

    @staticmethod
    def parse_json(body: bytes):
        if not body:
            return None
        try:
            return json.loads(body)
        except ValueError:
            raise exc.InvalidRequestBody() from None

    def page(self, request: Request, items, fields: dict, to_json, metadata: str) -> Response:
        """One page of a list: $filter, $select, maxresults and a nextLink."""
        q = request.query_params
        token = q.get("$skiptoken")
        if token:
            state = odata.decode_token(token)
            filt, sel, limit, after = state.get("f"), state.get("s"), state.get("m", 1000), state.get("a", 0)
        else:
            filt, sel = q.get("$filter"), q.get("$select")
            limit, after = odata.parse_max_results(q.get("maxresults")), 0
        pred = odata.compile_filter(filt, fields)
        names = odata.parse_select(sel)
        chosen, more = [], False
        with self.backend.lock:
            for item in items:
                if item.seq <= after or (pred is not None and not pred(item)):
                    continue
                if len(chosen) == limit:
                    more = True
                    break
                chosen.append(item)
            values = [odata.select(to_json(item), names) for item in chosen]
        body = {"odata.metadata": f"{self._base()}/$metadata#{metadata}", "value": values}
        if more:
            token = odata.encode_token({"f": filt, "s": sel, "m": limit, "a": chosen[-1].seq})
            body["odata.nextLink"] = (f"{self._base()}{request.url.path}?api-version={API_VERSION}"
                                      f"&$skiptoken={token}")
        return self.json(request, body)

    async def stats(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.backend.stats.reset()
            return Response(b"", status_code=204)
        return Response(json.dumps(self.backend.stats.snapshot(), indent=1), media_type="application/json")
