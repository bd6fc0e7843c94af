"""Servers and helpers of the secret-canary test (test_secret_canary.py).

- `GitServer`: a git smart-HTTP remote (`git http-backend` as CGI) that asks for
  Basic auth and accepts only the canary token, so the GitOps agent must really
  use its token to push.
- `TokenServer`: stands in for oauth2.googleapis.com (unreachable here): it
  answers the service-account JWT grant with the canary access token, which the
  agent then sends to fake-gcs (which ignores it).
- `find_canaries`: which canaries occur in a text, by name.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def find_canaries(text: str, canaries: dict[str, str]) -> list[str]:
    """Names of the canaries whose value occurs in `text`."""
    return sorted(name for name, value in canaries.items() if value in text)


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str) -> None:
        self.httpd = ThreadingHTTPServer((host, 0), handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class GitServer(_Server):
    """`root`/<name>.git over HTTP; every request needs Basic `x-access-token:<token>`."""

    def __init__(self, root: Path, token: str, host: str = "127.0.0.1") -> None:
        expected = "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()
        self.refused = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._cgi()

            def do_POST(self) -> None:
                self._cgi()

            def _cgi(self) -> None:
                if self.headers.get("Authorization") != expected:
                    server.refused += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path, _, query = self.path.partition("?")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                env = {**os.environ, "GIT_PROJECT_ROOT": str(root), "GIT_HTTP_EXPORT_ALL": "1",
                       "PATH_INFO": path, "QUERY_STRING": query, "REMOTE_USER": "agent",
                       "REQUEST_METHOD": self.command, "REMOTE_ADDR": "127.0.0.1",
                       "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                       "CONTENT_LENGTH": str(len(body)),
                       "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", "")}
                out = subprocess.run(["git", "http-backend"], input=body, env=env,
                                     capture_output=True, timeout=60).stdout
                head, _, payload = out.partition(b"\r\n\r\n")
                headers = [line.split(":", 1) for line in head.decode().split("\r\n") if line]
                status = next((int(v.split()[0]) for k, v in headers if k.lower() == "status"),
                              200)
                self.send_response(status)
                for key, value in headers:
                    if key.lower() != "status":
                        self.send_header(key, value.strip())
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        super().__init__(Handler, host)


class TokenServer(_Server):
    """An OAuth token endpoint granting `access_token` to any JWT assertion."""

    def __init__(self, access_token: str, host: str = "127.0.0.1") -> None:
        self.grants = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.grants += 1
                body = json.dumps({"access_token": access_token, "expires_in": 3600,
                                   "token_type": "Bearer"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(Handler, host)


def service_account_key(token_uri: str) -> tuple[str, str]:
    """A fresh service-account key JSON, and one line of its private key (a canary)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    document: dict[str, Any] = {
        "type": "service_account", "project_id": "harness", "private_key_id": "k1",
        "private_key": pem, "client_email": "fetch@harness.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": token_uri}
    return json.dumps(document), pem.splitlines()[5]
