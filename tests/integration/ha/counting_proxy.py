"""`CountingProxy`: a plain-HTTP forwarding proxy that records every request it passes on.

Put it between a client (the agent's KubeClient, its control-plane client) and
a real server (the Kubernetes API stand-in, the reference control plane) to
count requests by verb and resource: no mock, the server answers for real.
Bodies are read whole (no streaming: do not send watches through it).
Used by tests/integration/ha/test_ha_request_budget.py and by bench/.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade", "content-length", "host"}
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass(frozen=True)
class Seen:
    """One request passed on: wall-clock time, method, path (with query), answer status."""

    at: float
    method: str
    path: str
    status: int

    @property
    def write(self) -> bool:
        return self.method in WRITE_METHODS

    def kube_verb_resource(self) -> tuple[str, str]:
        """('list', 'deployments.apps') etc., as RBAC names them."""
        from agent.plugins.kubernetes.client import _describe, _verb

        path, _, query = self.path.partition("?")
        params = dict(part.split("=", 1) for part in query.split("&") if "=" in part)
        return _verb(self.method, path, params), _describe(path)[0]


class CountingProxy:
    """Forwards every request to `upstream` (http://host:port) and records it."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True,
                                        name="counting-proxy")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- reading the record -------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.seen.clear()

    def snapshot(self) -> list[Seen]:
        with self._lock:
            return list(self.seen)

    def count(self, since: float = 0.0) -> int:
        return sum(1 for s in self.snapshot() if s.at >= since)

    def kube_counts(self, since: float = 0.0) -> Counter[tuple[str, str]]:
        """Counter of (verb, resource) for Kubernetes API requests."""
        return Counter(s.kube_verb_resource() for s in self.snapshot() if s.at >= since)

    def writes(self, since: float = 0.0) -> list[Seen]:
        return [s for s in self.snapshot() if s.at >= since and s.write]

    # -- forwarding -----------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=120)
            self._local.conn = conn
        return conn

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes
                ) -> tuple[int, list[tuple[str, str]], bytes]:
        for attempt in range(2):  # a kept-alive upstream connection may have been closed
            conn = self._connection()
            try:
                conn.request(method, path, body=body or None, headers=headers)
                response = conn.getresponse()
                data = response.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        with self._lock:
            self.seen.append(Seen(time.time(), method, path, response.status))
        return response.status, response.getheaders(), data


def _handler(proxy: CountingProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            try:
                status, answer_headers, data = proxy.forward(self.command, self.path, headers,
                                                             body)
            except OSError as exc:
                status, answer_headers, data = 502, [], f"upstream: {exc}".encode()
            self.send_response(status)
            for key, value in answer_headers:
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _any

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler
