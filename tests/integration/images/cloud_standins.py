"""Local stand-ins that speak the cloud token protocols, in front of a real registry.

No cloud is reachable here, so each protocol step is served on 127.0.0.1 by
code that checks exactly what the real service checks and answers in its
format; the images land in a real `docker-registry` (distribution) that
validates the bearer tokens (RS256, signed with the harness token signer).

- `CloudRegistry`: one HTTPS host, like `myregistry.azurecr.io` or `gcr.io`:
  `/oauth2/exchange` (ACR: AAD access token -> ACR refresh token),
  `/oauth2/token` (the registry's realm: refresh token or Google access token
  -> registry access token), `/{tenant}/oauth2/v2.0/token` (Microsoft Entra ID:
  federated service-account token -> AAD token), and `/v2/...` forwarded to
  the distribution registry behind it.
- `MetadataServer`: the GCE/GKE metadata server protocol over plain HTTP
  (`Metadata-Flavor: Google` required both ways), issuing access tokens.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from tools.harnesslib.registry import TOKEN_ISSUER
from tools.harnesslib.tokenserver import Issuer

ACR_USER = "00000000-0000-0000-0000-000000000000"
GOOGLE_USER = "oauth2accesstoken"
ACR_SCOPE = "https://containerregistry.azure.net/.default"
SERVICE = "cloud-standin"


def _jwt(claims: dict[str, Any]) -> str:
    """An unsigned JWT-shaped token (the clients only read `exp`)."""
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none'})}.{part(claims)}.{secrets.token_urlsafe(16)}"


@dataclass
class Ledger:
    """What the stand-ins issued and saw, for the tests' assertions."""

    tenant: str = "tenant-1"
    client_id: str = "client-1"
    federated_token: str = field(default_factory=lambda: "sa-" + secrets.token_urlsafe(24))
    aad_tokens: set[str] = field(default_factory=set)
    refresh_tokens: set[str] = field(default_factory=set)
    google_tokens: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _json(self, code: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        return {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}

    def _basic(self) -> tuple[str, str]:
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return "", ""
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user, password


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    ledger: Ledger
    issuer: Issuer
    backend: str
    host_port: str


class _CloudHandler(_Handler):
    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/oauth2/token":
            self._registry_token(*self._basic(), parse_qs(urlsplit(self.path).query))
        elif path.startswith("/v2/"):
            self._forward()
        else:
            self._json(404, {"error": "not_found"})

    def do_HEAD(self) -> None:
        self._forward()

    def do_PUT(self) -> None:
        self._forward()

    def do_PATCH(self) -> None:
        self._forward()

    def do_DELETE(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        ledger = self.server.ledger
        if path.startswith("/v2/"):
            self._forward()
            return
        form = self._form()
        ledger.calls.append(path)
        if path == f"/{ledger.tenant}/oauth2/v2.0/token":
            ok = (form.get("grant_type") == "client_credentials"
                  and form.get("client_id") == ledger.client_id
                  and form.get("scope") == ACR_SCOPE
                  and form.get("client_assertion_type")
                  == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                  and hmac.compare_digest(form.get("client_assertion", ""),
                                          ledger.federated_token))
            if not ok:
                self._json(401, {"error": "invalid_client",
                                 "error_description": "AADSTS700213: no matching federated "
                                 "identity record"})
                return
            token = "aad-" + secrets.token_urlsafe(24)
            ledger.aad_tokens.add(token)
            self._json(200, {"token_type": "Bearer", "expires_in": 3599, "access_token": token})
        elif path == "/oauth2/exchange":
            ok = (form.get("grant_type") == "access_token"
                  and form.get("service") == self.server.host_port
                  and form.get("tenant") == ledger.tenant
                  and form.get("access_token") in ledger.aad_tokens)
            if not ok:
                self._json(401, {"errors": [{"code": "UNAUTHORIZED",
                                             "message": "invalid AAD access token"}]})
                return
            refresh = _jwt({"exp": int(time.time()) + 3 * 3600, "tenant": ledger.tenant})
            ledger.refresh_tokens.add(refresh)
            self._json(200, {"refresh_token": refresh})
        elif path == "/oauth2/token":
            # ACR's access-token step as a POST (grant_type=refresh_token)
            user, password = ((ACR_USER, form.get("refresh_token", ""))
                              if form.get("grant_type") == "refresh_token" else ("", ""))
            query = {"service": [form.get("service", "")],
                     "scope": [form.get("scope", "")]}
            self._registry_token(user, password, query)
        else:
            self._json(404, {"error": "not_found"})

    def _registry_token(self, user: str, password: str, query: dict[str, list[str]]) -> None:
        ledger = self.server.ledger
        ledger.calls.append("/oauth2/token")
        valid = ((user == ACR_USER and password in ledger.refresh_tokens)
                 or (user == GOOGLE_USER and password in ledger.google_tokens))
        if not valid:
            self._json(401, {"errors": [{"code": "UNAUTHORIZED", "message": "invalid token"}]})
            return
        scopes = [one for value in query.get("scope", []) for one in value.split()]
        token = self.server.issuer.token(user, SERVICE, scopes)
        self._json(200, {"access_token": token, "token": token, "expires_in": 300})

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("host", "content-length", "connection")}
        headers["Host"] = self.server.host_port
        headers["X-Forwarded-Proto"] = "https"
        answer = requests.request(self.command, self.server.backend + self.path, data=body,
                                  headers=headers, allow_redirects=False, timeout=60)
        self.send_response(answer.status_code)
        for key, value in answer.headers.items():
            if key.lower() in ("content-length", "transfer-encoding", "connection",
                               "content-encoding"):
                continue
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.content)


class _MetadataHandler(_Handler):
    def do_GET(self) -> None:
        ledger = self.server.ledger
        if self.headers.get("Metadata-Flavor") != "Google":
            self._json(403, {"error": "Missing Metadata-Flavor:Google header"})
            return
        path = urlsplit(self.path).path
        ledger.calls.append(path)
        flavor = {"Metadata-Flavor": "Google"}
        if path in ("", "/"):
            self._json(200, {}, flavor)
        elif path == "/computeMetadata/v1/project/project-id":
            data = b"my-project"
            self.send_response(200)
            self.send_header("Metadata-Flavor", "Google")
            self.send_header("Content-Type", "application/text")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif path.startswith("/computeMetadata/v1/instance/service-accounts/"):
            if path.endswith("/token"):
                token = "ya29.standin-" + secrets.token_urlsafe(24)
                ledger.google_tokens.add(token)
                self._json(200, {"access_token": token, "expires_in": 3599,
                                 "token_type": "Bearer"}, flavor)
            else:
                self._json(200, {"email": "agent@my-project.iam.gserviceaccount.com",
                                 "aliases": ["default"],
                                 "scopes": ["https://www.googleapis.com/auth/cloud-platform"]},
                           flavor)
        else:
            self._json(404, {"error": "not_found"}, flavor)


def _serve(server: _Server) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


class CloudRegistry:
    """A distribution registry with token auth behind the cloud token endpoints (HTTPS)."""

    def __init__(self, workdir: Path, tls_dir: Path, ledger: Ledger) -> None:
        self.ledger = ledger
        self.server = _Server(("127.0.0.1", 0), _CloudHandler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        backend_port = _free_port()
        config = {
            "version": "0.1", "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}},
            "http": {"addr": f"127.0.0.1:{backend_port}", "secret": secrets.token_hex(8)},
            "auth": {"token": {"realm": f"https://{self.host}/oauth2/token", "service": SERVICE,
                               "issuer": TOKEN_ISSUER,
                               "rootcertbundle": str(tls_dir / "ca.crt")}},
        }
        (workdir / "config.yml").write_text(json.dumps(config))
        self.log = (workdir / "registry.log").open("wb")
        self.process = subprocess.Popen(["docker-registry", "serve", str(workdir / "config.yml")],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        self.server.ledger = ledger
        self.server.issuer = Issuer(tls_dir / "token-signer.key", tls_dir / "token-signer.crt",
                                    TOKEN_ISSUER)
        self.server.backend = f"http://127.0.0.1:{backend_port}"
        self.server.host_port = self.host
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls_dir / "server.crt", tls_dir / "server.key")
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(f"{self.server.backend}/v2/", timeout=1)
                break
            except requests.RequestException:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("docker-registry did not start") from None
                time.sleep(0.1)
        _serve(self.server)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.process.terminate()
        self.process.wait(timeout=10)
        self.log.close()


class MetadataServer:
    """The GCE/GKE metadata server protocol on plain HTTP, like 169.254.169.254."""

    def __init__(self, ledger: Ledger) -> None:
        self.server = _Server(("127.0.0.1", 0), _MetadataHandler)
        self.server.ledger = ledger
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        _serve(self.server)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
