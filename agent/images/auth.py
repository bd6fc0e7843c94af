"""Registry credential providers: anonymous, basic, docker config, AWS ECR, Azure ACR, Google.

A provider answers "which username/password for this registry host?". The
registry client turns that into Basic auth or into a Bearer token request,
whatever the registry's challenge asks for. Short-lived credentials (ECR,
Google access tokens) are refreshed before they expire, so long builds don't
lose their login half-way. Secrets never appear in a repr, a log line or an
exception message.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent.errors import RegistryError
from agent.images.settings import ImageSettings, RegistryCredentials
from agent.images.trust import ACR_HOST, ECR_HOST, GCP_HOST, Binding, normalise_host
from agent.logs import register_secret

log = logging.getLogger(__name__)

#: Refresh short-lived tokens this many seconds before they expire.
REFRESH_MARGIN = 300.0
#: An ECR token that arrives already (nearly) expired is used for this long, then refetched.
EXPIRED_TOKEN_GRACE = 30.0


@dataclass(frozen=True)
class Credential:
    """A username and a secret; the repr never shows the secret."""

    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credential(username={self.username!r}, password='**********')"


class CredentialProvider(Protocol):
    """Where registry credentials come from."""

    name: str
    binding: Binding

    def get(self, registry: str) -> Credential | None:
        """Credentials for `registry` (host[:port]), or None for anonymous access."""
        ...

    def invalidate(self, registry: str) -> None:
        """Forget cached credentials after the registry refused them."""
        ...

    def ensure_repository(self, registry: str, repository: str) -> None:
        """Create the repository when the registry needs that before a push (ECR)."""
        ...


class AnonymousProvider:
    """No credentials."""

    name = "anonymous"
    #: the hosts the credential may go to (set by `provider_for`; token realms are checked
    #: against it)
    binding = Binding(())

    def get(self, registry: str) -> Credential | None:
        return None

    def invalidate(self, registry: str) -> None:
        return None

    def ensure_repository(self, registry: str, repository: str) -> None:
        return None


class BasicProvider(AnonymousProvider):
    """A fixed username and password (the password file is re-read on use)."""

    name = "basic"

    def __init__(self, username: str, password: str | None = None,
                 password_file: Path | None = None) -> None:
        self.username = username
        self._password = password
        self._password_file = password_file

    def get(self, registry: str) -> Credential | None:
        if self._password_file is not None:
            secret = self._password_file.read_text().strip()
        else:
            secret = self._password or ""
        register_secret(secret)  # re-read on rotation: every value is scrubbed from logs
        return Credential(self.username, secret)


class DockerConfigProvider(AnonymousProvider):
    """`auths` of a docker config.json / `kubernetes.io/dockerconfigjson` (or dockercfg) secret.

    Covers the ACR admin user or a service principal, generic registries and
    the OpenShift integrated registry (its service-account token secrets are
    dockercfg secrets with the token as password).
    """

    name = "dockerconfig"

    def __init__(self, config: Mapping[str, Any]) -> None:
        auths = config.get("auths", config)
        self._auths: dict[str, Mapping[str, Any]] = {}
        if isinstance(auths, Mapping):
            for key, entry in auths.items():
                if isinstance(entry, Mapping):
                    self._auths[normalise_host(str(key))] = entry

    @classmethod
    def from_file(cls, path: Path) -> DockerConfigProvider:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RegistryError(
                f"cannot read docker config {path}: {type(exc).__name__}; check "
                "images.credentials.docker_config_file"
            ) from None
        if not isinstance(data, Mapping):
            raise RegistryError(f"docker config {path} must hold a JSON object")
        return cls(data)

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str]) -> DockerConfigProvider:
        """From the decoded `data` of a dockerconfigjson or dockercfg secret."""
        raw = data.get(".dockerconfigjson") or data.get(".dockercfg") or "{}"
        try:
            parsed = json.loads(raw)
        except ValueError:
            raise RegistryError("docker config secret holds invalid JSON") from None
        return cls(parsed)

    def hosts(self) -> list[str]:
        return sorted(self._auths)

    def get(self, registry: str) -> Credential | None:
        entry = self._auths.get(normalise_host(registry))
        if entry is None:
            return None
        if entry.get("auth"):
            try:
                decoded = base64.b64decode(str(entry["auth"])).decode()
            except (ValueError, UnicodeDecodeError):
                raise RegistryError(
                    f"docker config entry for {registry} has an invalid 'auth' value"
                ) from None
            username, _, password = decoded.partition(":")
            return Credential(username, password)
        if entry.get("username"):
            return Credential(str(entry["username"]), str(entry.get("password", "")))
        if entry.get("identitytoken"):
            # ACR refresh tokens: the token service accepts them as a password of this user.
            return Credential("00000000-0000-0000-0000-000000000000", str(entry["identitytoken"]))
        return None


class _ExpiringProvider(AnonymousProvider):
    """Caches one credential per registry and refreshes it before it expires."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[Credential, float]] = {}

    def _fetch(self, registry: str) -> tuple[Credential, float]:
        raise NotImplementedError

    def get(self, registry: str) -> Credential | None:
        with self._lock:
            cached = self._cache.get(registry)
            now = time.time()
            if cached is not None and now < cached[1]:
                return cached[0]
            credential, expires_at = self._fetch(registry)
            refresh_at = expires_at - REFRESH_MARGIN
            if refresh_at <= now:
                # Already expired or about to: use it for this operation, refetch next time.
                log.debug("%s token for %s expires within %ss", self.name, registry,
                          REFRESH_MARGIN)
                refresh_at = now + EXPIRED_TOKEN_GRACE
            self._cache[registry] = (credential, refresh_at)
            return credential

    def invalidate(self, registry: str) -> None:
        with self._lock:
            self._cache.pop(registry, None)


class EcrProvider(_ExpiringProvider):
    """AWS ECR: GetAuthorizationToken through boto3's default chain (IRSA included)."""

    name = "ecr"

    def __init__(self, region: str | None = None, endpoint_url: str | None = None,
                 create_repositories: bool = False) -> None:
        super().__init__()
        self.region = region
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_ECR")
        self.create_repositories = create_repositories
        self._clients: dict[str, Any] = {}

    def _region_for(self, registry: str) -> str | None:
        """The registry's own region (in its host name) wins: a token of another region's
        ECR is refused. The configured region serves hosts that don't name one (proxies)."""
        match = ECR_HOST.match(registry)
        return match.group("region") if match else self.region

    def _client(self, registry: str) -> Any:
        region = self._region_for(registry) or "us-east-1"
        if region not in self._clients:
            import boto3  # deferred: only ECR users pay for the import

            self._clients[region] = boto3.client(
                "ecr", region_name=region, endpoint_url=self.endpoint_url
            )
        return self._clients[region]

    def _registry_ids(self, registry: str) -> dict[str, Any]:
        match = ECR_HOST.match(registry)
        return {"registryIds": [match.group("account")]} if match else {}

    def _fetch(self, registry: str) -> tuple[Credential, float]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self._client(registry).get_authorization_token(
                **self._registry_ids(registry)
            )
            data = answer["authorizationData"][0]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise RegistryError(
                f"ECR refused GetAuthorizationToken for {registry} ({code}): check the IAM "
                "role of the agent's service account (ecr:GetAuthorizationToken)"
            ) from None
        except (BotoCoreError, KeyError, IndexError) as exc:
            raise RegistryError(
                f"cannot get an ECR token for {registry}: {type(exc).__name__}; check AWS "
                "credentials (IRSA: AWS_ROLE_ARN/AWS_WEB_IDENTITY_TOKEN_FILE) and region"
            ) from None
        username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        expires = data.get("expiresAt")
        expires_at = expires.timestamp() if hasattr(expires, "timestamp") else time.time() + 3600
        return Credential(username, password), expires_at

    def ensure_repository(self, registry: str, repository: str) -> None:
        if not self.create_repositories:
            return
        from botocore.exceptions import BotoCoreError, ClientError

        client = self._client(registry)
        ids = self._registry_ids(registry)
        extra = {"registryId": ids["registryIds"][0]} if ids else {}
        try:
            client.create_repository(repositoryName=repository, **extra)
            log.info("created ECR repository %s on %s", repository, registry)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code != "RepositoryAlreadyExistsException":
                raise RegistryError(
                    f"cannot create ECR repository {repository} on {registry} ({code}): allow "
                    "ecr:CreateRepository or create it beforehand"
                ) from None
        except BotoCoreError as exc:
            raise RegistryError(
                f"cannot create ECR repository {repository}: {type(exc).__name__}"
            ) from None


class GoogleProvider(_ExpiringProvider):
    """GCR / Artifact Registry: google-auth default credentials (Workload Identity included)."""

    name = "gcp"
    SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)

    def __init__(self) -> None:
        super().__init__()
        self._credentials: Any = None

    def _fetch(self, registry: str) -> tuple[Credential, float]:
        import google.auth
        import google.auth.exceptions
        import google.auth.transport.requests

        try:
            if self._credentials is None:
                self._credentials, _ = google.auth.default(scopes=list(self.SCOPES))
            self._credentials.refresh(google.auth.transport.requests.Request())
        except google.auth.exceptions.GoogleAuthError as exc:
            raise RegistryError(
                f"cannot get Google credentials for {registry}: {type(exc).__name__}; check "
                "Workload Identity (iam.gke.io/gcp-service-account) or "
                "GOOGLE_APPLICATION_CREDENTIALS"
            ) from None
        expiry = getattr(self._credentials, "expiry", None)
        expires_at = (
            expiry.replace(tzinfo=expiry.tzinfo or datetime.UTC).timestamp()
            if expiry is not None else time.time() + 3000
        )
        return Credential("oauth2accesstoken", str(self._credentials.token)), expires_at


def provider_for(settings: RegistryCredentials, registry: str,
                 bound_to: Iterable[str] = (),
                 setting: str = "images.credentials.hosts") -> CredentialProvider:
    """The provider `settings` ask for, when its credential may go to `registry`.

    The credential is bound (agent.images.trust) to `bound_to` (the generated
    repository's host), `settings.hosts` and, for a cloud provider, its cloud's
    host names; for any other registry this is the anonymous provider.
    """
    kind = _kind(settings, registry)
    hosts = [*bound_to, *settings.hosts]
    if kind == "ecr" and settings.ecr_registry_override:
        hosts.append(settings.ecr_registry_override)
    binding = Binding(hosts, kind, setting)
    # a docker config is keyed by host already: its binding only decides token realms
    if kind not in ("anonymous", "dockerconfig") and not binding.allows(registry):
        log.debug("no %s credentials sent to registry %s: not one of the hosts they are "
                  "configured for (%s)", kind, registry, setting)
        return AnonymousProvider()
    provider = _make(kind, settings)
    provider.binding = binding
    return provider


def registry_provider(images: ImageSettings, registry: str, *,
                      base: bool = False) -> CredentialProvider:
    """Credentials for `registry`: `images.credentials`, bound to the generated repository's
    host and its `hosts`; for a base image `images.base_credentials` when set (its `hosts`)."""
    if base and images.base_credentials is not None:
        return provider_for(images.base_credentials, registry,
                            setting="images.base_credentials.hosts")
    home = images.generated_image_repository
    return provider_for(images.credentials, registry, [home.split("/", 1)[0]] if home else [])


def _kind(settings: RegistryCredentials, registry: str) -> str:
    kind = settings.provider
    if kind != "auto":
        return kind
    if ECR_HOST.match(registry) or registry == settings.ecr_registry_override:
        return "ecr"
    if GCP_HOST.match(registry):
        return "gcp"
    if (ACR_HOST.match(registry) and settings.docker_config_file is None
            and os.environ.get("AZURE_FEDERATED_TOKEN_FILE")):
        return "acr"  # Azure Workload Identity; a docker config secret wins when given
    if settings.docker_config_file is not None:
        return "dockerconfig"
    if settings.username:
        return "basic"
    return "anonymous"


def _make(kind: str, settings: RegistryCredentials) -> CredentialProvider:
    if kind == "ecr":
        return EcrProvider(settings.aws_region, settings.ecr_endpoint_url,
                           settings.ecr_create_repositories)
    if kind == "gcp":
        return GoogleProvider()
    if kind == "acr":
        from agent.images.acr import AcrProvider  # deferred: acr builds on this module

        return AcrProvider()
    if kind == "dockerconfig":
        if settings.docker_config_file is None:
            raise RegistryError(
                "images.credentials.provider is dockerconfig but docker_config_file is not set"
            )
        return DockerConfigProvider.from_file(settings.docker_config_file)
    if kind == "basic":
        if not settings.username:
            raise RegistryError("images.credentials.provider is basic but username is not set")
        password = settings.password.get_secret_value() if settings.password else None
        return BasicProvider(settings.username, password, settings.password_file)
    return AnonymousProvider()
