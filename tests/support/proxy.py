"""An HTTP proxy for tests: in front of Azurite or the Batch emulator, it counts
requests, can slow some down and can fail a seeded share of them.

    proxy = start_proxy(azurite.blob_endpoint_root)
    proxy.url                           # where the kit should connect
    proxy.count("PUT", "_resource.pickle")
    proxy.delays[("PUT", "_resource.pickle")] = 0.05   # seconds before forwarding
    proxy.arrived("PUT", "_resource.pickle")             # requests received, whatever became of them
    proxy.stop()

A request is counted once its answer has been sent back (a 2xx answer only),
so a request cut off by a killed client is not counted as done. Every request
is also logged as it arrives (`arrived`), before any delay or fault.

With `failure_rate`, that seeded share of the requests for which `may_fail(method,
url)` holds (all of them by default) is answered 500 or 503 without being forwarded.
"""

from __future__ import annotations

import asyncio
import collections
import random
import socket
import threading
import time
from urllib.parse import unquote, urlsplit

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# Hop-by-hop headers and the ones httpx recomputes: not forwarded.
DROPPED_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length", "content-encoding"}


class Proxy:
    def __init__(self, upstream: str, failure_rate: float = 0.0, seed: int = 0, may_fail=None):
        self.upstream = upstream.rstrip("/")
        self.failure_rate = failure_rate
        self.may_fail = may_fail  # (method, url) -> whether this request may be failed
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.done: collections.Counter = collections.Counter()  # (method, path) -> 2xx answers sent
        self.urls: list = []  # every URL asked for, query (SAS) included
        self.arrivals: collections.Counter = collections.Counter()  # (method, path) -> requests received
        self.failed = 0
        self.delays: dict = {}
        self.lose_answers: dict = {}  # (method, path suffix) -> how many answers to cut off after forwarding
        self.drop_requests: dict = {}  # (method, path suffix) -> how many requests to cut off before forwarding  # (method, path suffix) -> seconds to wait before forwarding
        self.url = ""
        self._server = None
        self._thread = None
        self._client = None

    async def forward(self, request: Request) -> Response:
        path = unquote(urlsplit(str(request.url)).path)
        with self.lock:
            self.urls.append(str(request.url))
            self.arrivals[(request.method, path)] += 1
            fail = (self.failure_rate > 0 and (self.may_fail is None or self.may_fail(request.method, str(request.url)))
                    and self.random.random() < self.failure_rate)
            self.failed += bool(fail)
        if fail:
            return Response(status_code=self.random.choice([500, 503]))
        for (method, suffix), seconds in list(self.delays.items()):
            if request.method == method and path.endswith(suffix):
                await asyncio.sleep(seconds)
        if self._take(self.drop_requests, request.method, path):
            return _CutOff()  # never forwarded: the change was not made, and the client cannot tell
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=120)
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in DROPPED_HEADERS]
        answer = await self._client.request(request.method, self.upstream + request.url.path, params=request.url.query or None,
                                            content=await request.body(), headers=headers)
        if self._take(self.lose_answers, request.method, path):
            return _CutOff()  # the change was made upstream; the client never learns it
        headers = {k: v for k, v in answer.headers.items() if k.lower() not in DROPPED_HEADERS}
        counted = BackgroundTask(self._count, request.method, path) if 200 <= answer.status_code < 300 else None
        return Response(answer.content, status_code=answer.status_code, headers=headers, background=counted)

    def _take(self, budget: dict, method: str, path: str) -> bool:
        """Whether this request uses up one of the budget's cut-offs."""
        with self.lock:
            for (wanted, suffix), left in budget.items():
                if left and method == wanted and path.endswith(suffix):
                    budget[(wanted, suffix)] = left - 1
                    return True
        return False

    def _count(self, method: str, path: str) -> None:
        with self.lock:
            self.done[(method, path)] += 1

    def count(self, method: str, suffix: str = "") -> int:
        """2xx answers to requests with this method whose path ends with suffix."""
        with self.lock:
            return sum(n for (m, path), n in self.done.items() if m == method and path.endswith(suffix))

    def by_path(self, method: str, suffix: str = "") -> collections.Counter:
        with self.lock:
            return collections.Counter({path: n for (m, path), n in self.done.items() if m == method and path.endswith(suffix)})

    def arrived(self, method: str, suffix: str = "") -> collections.Counter:
        """Requests received (answered or not) with this method whose path ends with suffix, by path."""
        with self.lock:
            return collections.Counter({path: n for (m, path), n in self.arrivals.items() if m == method and path.endswith(suffix)})

    def start(self) -> "Proxy":
        app = Starlette(routes=[Route("/{path:path}", self.forward, methods=["GET", "PUT", "HEAD", "DELETE", "POST", "PATCH"])])
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the test proxy did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(10)


class _CutOff(Response):
    """An answer that stops after its first byte: the connection is dropped
    with the response half sent, as when a network fails mid-answer."""

    def __init__(self):
        super().__init__()

    async def __call__(self, scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1000")]})
        await send({"type": "http.response.body", "body": b"{", "more_body": True})
        raise ConnectionAbortedError("answer cut off on purpose by the test proxy")


def start_proxy(upstream: str, failure_rate: float = 0.0, seed: int = 0, may_fail=None) -> Proxy:
    return Proxy(upstream, failure_rate, seed, may_fail).start()
