"""A small registry token service (distribution's token auth spec), stdlib + openssl.

GET  /token?service=S&scope=repository:NAME:pull,push   (HTTP Basic credentials)
POST /token  grant_type=password&username=U&password=P&service=S&scope=...
Returns {"token", "access_token", "expires_in", "issued_at"}: an RS256 JWT whose
header carries the signing certificate (x5c); the registry trusts the CA that
signed it (auth.token.rootcertbundle). Every requested action is granted to a
valid user; a missing or wrong password gets 401.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import secrets
import ssl
import subprocess
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

LIFETIME = 300


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parse_scope(scope: str) -> dict[str, object] | None:
    """"repository:team/app:pull,push" -> {"type", "name", "actions"}."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if not kind or not name:
        return None
    return {"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]}


class Issuer:
    def __init__(self, signer_key: Path, signer_cert: Path, issuer: str) -> None:
        self.key = signer_key
        self.issuer = issuer
        pem = signer_cert.read_text()
        body = pem.split("-----BEGIN CERTIFICATE-----")[1].split("-----END CERTIFICATE-----")[0]
        self.x5c = [base64.b64encode(base64.b64decode("".join(body.split()))).decode()]

    def token(self, subject: str, service: str, scopes: list[str]) -> str:
        now = int(time.time())
        access = [s for s in (parse_scope(x) for x in scopes) if s]
        header = {"typ": "JWT", "alg": "RS256", "x5c": self.x5c}
        claims = {"iss": self.issuer, "sub": subject, "aud": service, "iat": now,
                  "nbf": now - 5, "exp": now + LIFETIME, "jti": secrets.token_hex(12),
                  "access": access}
        signing_input = ".".join(_b64url(json.dumps(p, separators=(",", ":")).encode())
                                 for p in (header, claims))
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(), capture_output=True, check=True).stdout
        return f"{signing_input}.{_b64url(signature)}"


def make_handler(issuer: Issuer, users: dict[str, str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            user, password = self._basic()
            self._answer(user, password, query)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            user = (form.get("username") or [""])[0]
            password = (form.get("password") or [""])[0]
            if not user:
                user, password = self._basic()
            self._answer(user, password, form)

        def _basic(self) -> tuple[str, str]:
            header = self.headers.get("Authorization", "")
            if not header.lower().startswith("basic "):
                return "", ""
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                return "", ""
            return user, password

        def _answer(self, user: str, password: str, query: dict[str, list[str]]) -> None:
            if urlsplit(self.path).path != "/token":
                self._json(404, {"errors": [{"code": "NOT_FOUND"}]})
                return
            expected = users.get(user)
            if expected is None or not hmac.compare_digest(expected, password):
                self._json(401, {"errors": [{"code": "UNAUTHORIZED",
                                             "message": "bad credentials"}]},
                           {"WWW-Authenticate": 'Basic realm="harness-token"'})
                return
            service = (query.get("service") or [""])[0]
            scopes = [one for value in query.get("scope", []) for one in value.split()]
            token = issuer.token(user, service, scopes)
            issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self._json(200, {"token": token, "access_token": token,
                             "expires_in": LIFETIME, "issued_at": issued})

        def _json(self, code: int, body: object, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for flag in ("--cert", "--key", "--signer-cert", "--signer-key", "--users", "--issuer"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    users = json.loads(Path(args.users).read_text())
    issuer = Issuer(Path(args.signer_key), Path(args.signer_cert), args.issuer)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(issuer, users))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"token service on https://{args.host}:{args.port}/token", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
