"""A small HTTP proxy that can break on purpose: 500s, 503 with Retry-After, garbage, hangs,
or answers rewritten in transit.

It sits between a real agent process and the real reference control plane,
so the agent's error handling is exercised over real sockets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests


class FaultyProxy:
    """Forwards to `upstream` while `mode` is "pass"; otherwise misbehaves as told."""

    MODES = ("pass", "500", "503", "garbage", "hang", "reset")

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.mode = "pass"
        #: in "pass" mode, rewrites an upstream answer: (method, path, body) -> body
        self.rewrite: Callable[[str, str, bytes], bytes] | None = None
        self.requests_seen = 0
        self.faults_served = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.mode = "pass"
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                proxy.requests_seen += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                mode = proxy.mode
                if mode != "pass":
                    proxy.faults_served += 1
                if mode == "500":
                    return self._reply(500, b'{"error":"internal"}')
                if mode == "503":
                    return self._reply(503, b"busy", {"Retry-After": "1"})
                if mode == "garbage":
                    return self._reply(200, b"<html>not json at all")
                if mode == "hang":
                    time.sleep(30)
                    return self._reply(504, b"")
                if mode == "reset":
                    self.close_connection = True
                    self.connection.close()
                    return None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection")}
                upstream = requests.request(self.command, proxy.upstream + self.path,
                                            data=body, headers=headers, timeout=60)
                content = upstream.content
                if proxy.rewrite is not None:
                    content = proxy.rewrite(self.command, self.path, content)
                return self._reply(upstream.status_code, content,
                                   {"Content-Type": upstream.headers.get("Content-Type", "")})

            def _reply(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                for key, value in (headers or {}).items():
                    if value:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _relay

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler
