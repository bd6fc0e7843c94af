"""An attacker's endpoint on 127.0.0.1: a real HTTP server that records what it receives.

Each test gets fresh servers (`endpoint` fixture, a factory). A server serves one
model body at any path, or what `routes` says (a redirect, an error, a streamed body
without length), and records every request's path and Authorization header, so a
test can assert that a credential never arrived where it does not belong.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

BODY = b"model-bytes " * 1000


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None


@dataclass
class Endpoint:
    """A running server: `url` (http://127.0.0.1:PORT), what it saw, what it answers."""

    url: str
    seen: list[Seen] = field(default_factory=list)
    #: path -> (status, headers, body or None); a body of type int streams that many
    #: bytes without Content-Length (chunked)
    routes: dict[str, tuple[int, dict[str, str], Any]] = field(default_factory=dict)
    body: bytes = BODY

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1]

    def authorizations(self) -> list[str]:
        return [s.authorization for s in self.seen if s.authorization]


def _handler(endpoint: Endpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, head: bool) -> None:
            endpoint.seen.append(Seen(self.command, self.path, self.headers.get("Authorization")))
            route = endpoint.routes.get(self.path.split("?", 1)[0])
            status, headers, body = route if route else (200, {}, endpoint.body)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if isinstance(body, int):  # streamed, length unknown
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if head:
                    return
                chunk = b"\0" * 65536
                left = body
                try:
                    while left > 0:
                        piece = chunk[:min(left, len(chunk))]
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                        left -= len(piece)
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return
            data = body or b""
            self.send_header("Content-Length", str(len(data)))
            if status == 200 and "ETag" not in headers:
                self.send_header("ETag", '"v1"')
            self.end_headers()
            if not head:
                self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer(head=False)

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def endpoint() -> Iterator[Callable[..., Endpoint]]:
    """A factory of recording servers on 127.0.0.1 (stopped after the test); given a
    (certificate, key) pair of PEM files, the server speaks https with it."""
    servers: list[ThreadingHTTPServer] = []

    def start(tls: tuple[Path, Path] | None = None) -> Endpoint:
        ep = Endpoint("")
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(ep))
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
            scheme = "https"
        ep.url = f"{scheme}://127.0.0.1:{httpd.server_address[1]}"
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return ep

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()
