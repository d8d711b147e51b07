"""The HTTP surface: authentication, OData options, error bodies and headers.

``BatchResponses.endpoint`` wraps each operation handler with what every
Batch request goes through, in the service's order: count it, check the
api-version and the SharedKey signature, maybe inject a fault, run the
handler, and turn a ``BatchError`` into Batch's error body. Handlers are
small: parse the request, call the backend, shape the answer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import stat
import traceback
import urllib.parse
import uuid
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from . import exceptions as exc
from . import odata
from .models import API_VERSION, BatchBackend, http_date, iso, now_us

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


class BatchResponses:
    def __init__(self, backend: BatchBackend, account: str, key: str):
        self.backend = backend
        self.account = account
        self.key = key
        base64.b64decode(key, validate=True)  # a bad key fails at start, not per request

    # -- the wrapper every Batch operation goes through --

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

    # -- response helpers --

    def _base(self) -> str:
        return self.backend.base_url

    def _headers(self, request: Request, etag=None, modified=None, data_service_id=None) -> dict:
        headers = {"request-id": str(uuid.uuid4()), "DataServiceVersion": "3.0"}
        client_id = request.headers.get("client-request-id")
        if client_id:
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
        return Response(b"", status_code=status, headers=self._headers(request, **kw))

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

    # -- pools -------------------------------------------------------------------------

    def create_pool(self, request, body):
        pool = self.backend.create_pool(self.parse_json(body))
        return self.empty(request, 201, etag=pool.etag, modified=pool.modified,
                          data_service_id=f"{self._base()}/pools/{pool.id}")

    def list_pools(self, request, body):
        pools = sorted(self.backend.list_pools(), key=lambda p: p.seq)
        return self.page(request, pools, _fields("pool"), self.backend.pool_json, "pools")

    def get_pool(self, request, body):
        with self.backend.lock:
            pool = self.backend.get_pool(request.path_params["poolId"])
            out = odata.select(self.backend.pool_json(pool), odata.parse_select(request.query_params.get("$select")))
        out["odata.metadata"] = f"{self._base()}/$metadata#pools/@Element"
        return self.json(request, out, etag=pool.etag, modified=pool.modified)

    def pool_exists(self, request, body):
        pool = self.backend.get_pool(request.path_params["poolId"])
        return self.empty(request, 200, etag=pool.etag, modified=pool.modified)

    def delete_pool(self, request, body):
        self.backend.delete_pool(request.path_params["poolId"])
        return self.empty(request, 202)

    def resize_pool(self, request, body):
        self.backend.resize_pool(request.path_params["poolId"], self.parse_json(body))
        pool = self.backend.get_pool(request.path_params["poolId"])
        return self.empty(request, 202, etag=pool.etag, modified=pool.modified,
                          data_service_id=f"{self._base()}/pools/{pool.id}/resize")

    def list_nodes(self, request, body):
        nodes = self.backend.list_nodes(request.path_params["poolId"])
        return self.page(request, _Seq.wrap(nodes), _fields("node", wrapped=True),
                         lambda w: self.backend.node_json(w.item), "nodes")

    def get_node(self, request, body):
        with self.backend.lock:
            node = self.backend.get_node(request.path_params["poolId"], request.path_params["nodeId"])
            out = self.backend.node_json(node)
        out["odata.metadata"] = f"{self._base()}/$metadata#nodes/@Element"
        return self.json(request, out)

    # -- jobs --------------------------------------------------------------------------

    def create_job(self, request, body):
        job = self.backend.create_job(self.parse_json(body))
        return self.empty(request, 201, etag=job.etag, modified=job.modified,
                          data_service_id=f"{self._base()}/jobs/{job.id}")

    def list_jobs(self, request, body):
        jobs = sorted(self.backend.list_jobs(), key=lambda j: j.seq)
        return self.page(request, jobs, _fields("job"), self.backend.job_json, "jobs")

    def get_job(self, request, body):
        with self.backend.lock:
            job = self.backend.get_job(request.path_params["jobId"])
            out = odata.select(self.backend.job_json(job), odata.parse_select(request.query_params.get("$select")))
        out["odata.metadata"] = f"{self._base()}/$metadata#jobs/@Element"
        return self.json(request, out, etag=job.etag, modified=job.modified)

    def update_job(self, request, body):
        job = self.backend.update_job(request.path_params["jobId"], self.parse_json(body))
        return self.empty(request, 200, etag=job.etag, modified=job.modified,
                          data_service_id=f"{self._base()}/jobs/{job.id}")

    def terminate_job(self, request, body):
        self.backend.terminate_job(request.path_params["jobId"], self.parse_json(body))
        job = self.backend.get_job(request.path_params["jobId"])
        return self.empty(request, 202, etag=job.etag, modified=job.modified,
                          data_service_id=f"{self._base()}/jobs/{job.id}/terminate")

    def delete_job(self, request, body):
        self.backend.delete_job(request.path_params["jobId"])
        return self.empty(request, 202)

    def task_counts(self, request, body):
        counts = self.backend.task_counts(request.path_params["jobId"])
        counts["odata.metadata"] = f"{self._base()}/$metadata#taskcounts/@Element"
        return self.json(request, counts)

    # -- tasks -------------------------------------------------------------------------

    def create_task(self, request, body):
        job_id = request.path_params["jobId"]
        task = self.backend.add_task(job_id, self.parse_json(body))
        return self.empty(request, 201, etag=task.etag, modified=task.modified,
                          data_service_id=f"{self._base()}/jobs/{task.job.id}/tasks/{task.id}")

    def create_task_collection(self, request, body):
        from .schemas import MAX_COLLECTION_BODY_BYTES

        if len(body) > MAX_COLLECTION_BODY_BYTES:
            raise exc.RequestBodyTooLarge(values={
                "Reason": f"The body holds {len(body)} bytes; at most {MAX_COLLECTION_BODY_BYTES} are allowed."})
        job_id = request.path_params["jobId"]
        results = self.backend.add_task_collection(job_id, self.parse_json(body))
        out = []
        for r in results:
            if r["status"] == "success":
                task = r["task"]
                out.append({"status": "success", "taskId": task.id, "eTag": task.etag,
                            "lastModified": iso(task.modified),
                            "location": f"{self._base()}/jobs/{task.job.id}/tasks/{task.id}"})
            else:
                e = r["error"]
                out.append({"status": r["status"], "taskId": r["taskId"],
                            "error": {"code": e.code, "message": {"lang": "en-US", "value": e.message},
                                      **({"values": [{"key": k, "value": v} for k, v in e.values.items()]}
                                         if e.values else {})}})
        return self.json(request, {"odata.metadata": f"{self._base()}/$metadata#taskaddresult", "value": out})

    def list_tasks(self, request, body):
        tasks = self.backend.list_tasks(request.path_params["jobId"])   # creation order
        return self.page(request, tasks, _fields("task"), self.backend.task_json, "tasks")

    def get_task(self, request, body):
        with self.backend.lock:
            task = self.backend.get_task(request.path_params["jobId"], request.path_params["taskId"])
            out = odata.select(self.backend.task_json(task), odata.parse_select(request.query_params.get("$select")))
        out["odata.metadata"] = f"{self._base()}/$metadata#tasks/@Element"
        return self.json(request, out, etag=task.etag, modified=task.modified,
                         data_service_id=f"{self._base()}/jobs/{task.job.id}/tasks/{task.id}")

    def terminate_task(self, request, body):
        self.backend.terminate_task(request.path_params["jobId"], request.path_params["taskId"])
        task = self.backend.get_task(request.path_params["jobId"], request.path_params["taskId"])
        return self.empty(request, 204, etag=task.etag, modified=task.modified,
                          data_service_id=f"{self._base()}/jobs/{task.job.id}/tasks/{task.id}/terminate")

    def reactivate_task(self, request, body):
        task = self.backend.reactivate_task(request.path_params["jobId"], request.path_params["taskId"])
        return self.empty(request, 204, etag=task.etag, modified=task.modified,
                          data_service_id=f"{self._base()}/jobs/{task.job.id}/tasks/{task.id}/reactivate")

    def delete_task(self, request, body):
        self.backend.delete_task(request.path_params["jobId"], request.path_params["taskId"])
        return self.empty(request, 200)

    # -- task files --------------------------------------------------------------------

    def list_task_files(self, request, body):
        job_id, task_id = request.path_params["jobId"], request.path_params["taskId"]
        root = self.backend.task_dir(job_id, task_id)
        recursive = request.query_params.get("recursive", "").lower() == "true"
        base = f"{self._base()}/jobs/{job_id}/tasks/{task_id}/files/"
        entries = []
        for i, path in enumerate(_walk(root, recursive), start=1):
            entries.append(_FileEntry(i, path, path.relative_to(root).as_posix()))
        return self.page(request, entries, {"name": lambda f: f.name},
                         lambda f: _file_json(f, base), "files")

    def _task_file(self, request) -> tuple[Path, os.stat_result]:
        job_id, task_id = request.path_params["jobId"], request.path_params["taskId"]
        root = self.backend.task_dir(job_id, task_id)
        rel = request.path_params["filePath"]
        path = (root / rel).resolve()
        if path != root.resolve() and root.resolve() not in path.parents:
            raise exc.FileNotFound()
        try:
            st = path.stat()
        except OSError:
            raise exc.FileNotFound() from None
        return path, st

    def _file_headers(self, request, path: Path, st: os.stat_result) -> dict:
        headers = self._headers(request, etag=f"0x{int(st.st_mtime_ns):X}", modified=st.st_mtime_ns // 1000)
        rel = request.path_params["filePath"]
        headers.update({
            "ocp-creation-time": http_date(st.st_ctime_ns // 1000),
            "ocp-batch-file-isdirectory": "true" if stat.S_ISDIR(st.st_mode) else "false",
            "ocp-batch-file-url": f"{self._base()}/jobs/{request.path_params['jobId']}/tasks/"
                                  f"{request.path_params['taskId']}/files/{urllib.parse.quote(rel)}",
            "ocp-batch-file-mode": f"{stat.S_IMODE(st.st_mode) | stat.S_IFMT(st.st_mode):o}",
        })
        return headers

    def get_task_file(self, request, body):
        path, st = self._task_file(request)
        if stat.S_ISDIR(st.st_mode):
            raise exc.FileNotFound(message="The path names a directory, not a file.")
        headers = self._file_headers(request, path, st)
        start, end = 0, st.st_size - 1
        wanted = request.headers.get("ocp-range")
        if wanted and wanted.startswith("bytes="):
            lo, _, hi = wanted[6:].partition("-")
            start = int(lo) if lo else 0
            end = min(int(hi), end) if hi else end
        with open(path, "rb") as f:   # task logs are small; a range keeps big files cheap
            f.seek(start)
            data = f.read(max(0, end - start + 1))
        return Response(data, status_code=200, media_type="application/octet-stream", headers=headers)

    def get_task_file_properties(self, request, body):
        path, st = self._task_file(request)
        headers = self._file_headers(request, path, st)
        headers["Content-Length"] = str(0 if stat.S_ISDIR(st.st_mode) else st.st_size)
        return Response(b"", status_code=200, headers=headers, media_type="application/octet-stream")

    # -- outside the Batch API --

    async def stats(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.backend.stats.reset()
            return Response(b"", status_code=204)
        return Response(json.dumps(self.backend.stats.snapshot(), indent=1), media_type="application/json")


class _Seq:
    """Gives nodes a list position to page by (they have no creation sequence)."""
    __slots__ = ("seq", "item")

    def __init__(self, seq, item):
        self.seq, self.item = seq, item

    @classmethod
    def wrap(cls, items):
        return [cls(i, item) for i, item in enumerate(items, start=1)]


class _FileEntry:
    __slots__ = ("seq", "path", "name")

    def __init__(self, seq, path, name):
        self.seq, self.path, self.name = seq, path, name


def _walk(root: Path, recursive: bool):
    if not recursive:
        yield from sorted(root.iterdir())
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            yield Path(dirpath) / name


def _file_json(entry: _FileEntry, base: str) -> dict:
    try:
        st = entry.path.stat()
    except OSError:
        st = None
    is_dir = st is not None and stat.S_ISDIR(st.st_mode)
    body = {"name": entry.name, "url": base + urllib.parse.quote(entry.name), "isDirectory": is_dir}
    if st is not None:
        body["properties"] = {
            "creationTime": iso(st.st_ctime_ns // 1000), "lastModified": iso(st.st_mtime_ns // 1000),
            "contentLength": str(0 if is_dir else st.st_size), "contentType": "application/octet-stream",
            "fileMode": f"{stat.S_IMODE(st.st_mode) | stat.S_IFMT(st.st_mode):o}",
        }
    return body


def _fields(kind: str, wrapped: bool = False) -> dict:
    from . import models

    table = {"pool": models.POOL_FIELDS, "job": models.JOB_FIELDS, "task": models.TASK_FIELDS,
             "node": models.NODE_FIELDS}[kind]
    if wrapped:
        return {name: (lambda get: lambda w: get(w.item))(get) for name, get in table.items()}
    return table
