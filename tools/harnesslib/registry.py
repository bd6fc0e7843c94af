"""OCI registries (distribution, Debian's docker-registry): plain, basic+TLS, token+TLS."""

from __future__ import annotations

import json
import sys

from . import ecr
from .base import Server
from .layout import ROOT
from .procs import http_answers
from .tlsgen import write_htpasswd

TOKEN_SERVICE = "harness-registry"
TOKEN_ISSUER = "harness-token-service"


class PlainRegistry(Server):
    """Anonymous, plain HTTP."""

    name = "registry"
    scheme = "http"

    def config(self) -> dict[str, object]:
        data = self.layout.data(self.name)
        http: dict[str, object] = {"addr": self.hostport, "secret": self.state.secret(self.name)}
        if self.scheme == "https":
            http["tls"] = {"certificate": str(self.layout.tls / "server.crt"),
                           "key": str(self.layout.tls / "server.key")}
        return {
            "version": "0.1",
            "log": {"level": "info", "fields": {"service": self.name}},
            "storage": {"filesystem": {"rootdirectory": str(data)},
                        "delete": {"enabled": True},
                        "maintenance": {"uploadpurging": {"enabled": False}}},
            "http": http,
            **self.auth(),
        }

    def auth(self) -> dict[str, object]:
        return {}

    def prepare(self) -> None:
        super().prepare()
        path = self.layout.conf(self.name) / "config.yml"
        path.write_text(json.dumps(self.config(), indent=2))  # JSON is YAML

    def command(self) -> tuple[list[str], dict[str, str]]:
        return ["docker-registry", "serve", str(self.layout.conf(self.name) / "config.yml")], {}

    def ready(self) -> bool:
        return http_answers(f"{self.scheme}://{self.hostport}/v2/", self.ctx.ca)

    def exports(self) -> dict[str, str]:
        return {"HARNESS_REGISTRY": self.hostport}


class TlsRegistry(PlainRegistry):
    """htpasswd basic auth over TLS; also emulates ECR (user AWS, moto's token password)."""

    name = "registry-tls"
    scheme = "https"

    def auth(self) -> dict[str, object]:
        htpasswd = self.layout.conf(self.name) / "htpasswd"
        write_htpasswd(htpasswd, {"harness": self.state.secret("registry-tls-password"),
                                  ecr.USER: ecr.password()})
        return {"auth": {"htpasswd": {"realm": "harness-registry", "path": str(htpasswd)}}}

    def exports(self) -> dict[str, str]:
        return {"HARNESS_REGISTRY_TLS": self.hostport,
                "HARNESS_REGISTRY_TLS_USER": "harness",
                "HARNESS_REGISTRY_TLS_PASSWORD": self.state.secret("registry-tls-password"),
                "HARNESS_ECR_REGISTRY": self.hostport,
                "HARNESS_ECR_USER": ecr.USER,
                "HARNESS_ECR_PASSWORD": ecr.password()}


class TokenService(Server):
    """The realm of the token registry (tools/harnesslib/tokenserver.py), HTTPS."""

    name = "token-service"

    def prepare(self) -> None:
        super().prepare()
        users = self.layout.conf(self.name) / "users.json"
        users.write_text(json.dumps({"harness": self.state.secret("registry-token-password")}))
        users.chmod(0o600)

    def command(self) -> tuple[list[str], dict[str, str]]:
        tls = self.layout.tls
        argv = [sys.executable, "-m", "tools.harnesslib.tokenserver", "--host", self.host,
                "--port", str(self.port), "--cert", str(tls / "server.crt"),
                "--key", str(tls / "server.key"), "--signer-cert", str(tls / "token-signer.crt"),
                "--signer-key", str(tls / "token-signer.key"), "--issuer", TOKEN_ISSUER,
                "--users", str(self.layout.conf(self.name) / "users.json")]
        return argv, {"PYTHONPATH": str(ROOT)}

    def ready(self) -> bool:
        return http_answers(f"https://{self.hostport}/token", self.ctx.ca)

    @property
    def realm(self) -> str:
        return f"https://{self.hostport}/token"

    def exports(self) -> dict[str, str]:
        return {"HARNESS_TOKEN_REALM": self.realm, "HARNESS_TOKEN_SERVICE": TOKEN_SERVICE}


class TokenRegistry(PlainRegistry):
    """Bearer-token auth over TLS, tokens from TokenService."""

    name = "registry-token"
    scheme = "https"

    def auth(self) -> dict[str, object]:
        realm = f"https://{self.host}:{self.state.port(TokenService.name)}/token"
        return {"auth": {"token": {"realm": realm, "service": TOKEN_SERVICE,
                                   "issuer": TOKEN_ISSUER,
                                   "rootcertbundle": str(self.ctx.ca)}}}

    def exports(self) -> dict[str, str]:
        return {"HARNESS_REGISTRY_TOKEN": self.hostport,
                "HARNESS_REGISTRY_TOKEN_USER": "harness",
                "HARNESS_REGISTRY_TOKEN_PASSWORD": self.state.secret("registry-token-password")}
