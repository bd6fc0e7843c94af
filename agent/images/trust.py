"""Where a registry credential may go: the host it was configured for, and nowhere else.

Whoever names an image (a deployment's `model.image`, `config.base_image`, an
MLflow `image` tag) chooses the registry host the agent talks to. Without a
binding, a basic login would be sent to that host. So every configured
credential is bound (docs/security.md, item 2):

- `images.credentials`: the host of `images.generated_image_repository` plus
  `images.credentials.hosts`; `images.base_credentials`: its `hosts`;
- the cloud providers also take the hosts of their cloud (ECR
  `*.dkr.ecr.*.amazonaws.com` and `ecr_registry_override`, GCR / Artifact
  Registry, `*.azurecr.*`), never others;
- a docker config is bound by construction (its `auths` are keyed by host).

Any other registry is spoken to anonymously. A token service (`realm` of a
Bearer challenge) receives the login only over https (or when its host is in
`images.insecure_registries`), only when it runs on the registry's own host
name or on a host the credential is bound to (Docker Hub's auth.docker.io,
GitLab's token endpoint must be listed), and never at a blocked address
(`artifacts.blocked_networks` defaults). docker and containerd send the login
to whatever realm a registry names; we don't, because the registry here may be
the attacker's choice.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests

from agent.errors import RegistryError

if TYPE_CHECKING:
    from agent.images.auth import CredentialProvider

log = logging.getLogger(__name__)

ECR_HOST = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com"
)
GCP_HOST = re.compile(r"^([a-z0-9-]+-docker\.pkg\.dev|gcr\.io|[a-z0-9-]+\.gcr\.io)$")
ACR_HOST = re.compile(r"^[a-z0-9-]+\.azurecr\.(io|cn|us)$")
#: the host patterns a cloud provider's credential may go to besides the configured hosts
CLOUD_HOSTS: dict[str, re.Pattern[str]] = {"ecr": ECR_HOST, "gcp": GCP_HOST, "acr": ACR_HOST}


def normalise_host(key: str) -> str:
    """`host[:port]` of a registry key (URL, docker config key or plain host), lower case."""
    host = re.sub(r"^[a-z]+://", "", key.strip().lower()).split("/", 1)[0]
    return "registry-1.docker.io" if host in ("index.docker.io", "docker.io") else host


def _hostname(host: str) -> str:
    return (urlsplit("//" + host).hostname or host).lower()


class Binding:
    """The registry hosts one configured credential may be sent to."""

    def __init__(self, hosts: Iterable[str], kind: str = "basic",
                 setting: str = "images.credentials.hosts") -> None:
        self.hosts = frozenset(normalise_host(h) for h in hosts if h)
        self.pattern = CLOUD_HOSTS.get(kind)
        self.setting = setting

    def allows(self, host: str) -> bool:
        """Whether a credential may go to the registry (or token service) at `host`."""
        host = normalise_host(host)
        if host in self.hosts:
            return True
        return bool(self.pattern and self.pattern.match(_hostname(host)))

    def realm_allows(self, realm_host: str, registry: str) -> bool:
        """A token service on the registry's own host name (any port) or a bound host."""
        return _hostname(realm_host) == _hostname(registry) or self.allows(realm_host)


def check_realm(realm: str, registry: str, binding: Binding, *, has_credential: bool,
                insecure: Iterable[str]) -> None:
    """Refuse to follow a token realm that would expose the registry login.

    Over plain http only to a host listed in images.insecure_registries; on
    another host only when the credential is bound to it; never to a blocked
    (link-local / metadata) address.
    """
    parts = urlsplit(realm)
    host = parts.netloc.rsplit("@", 1)[-1].lower()
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise RegistryError(f"registry {registry} names an invalid token service {realm!r}")
    if parts.scheme == "http" and normalise_host(host) not in {normalise_host(h)
                                                               for h in insecure}:
        raise RegistryError(
            f"registry {registry} names a token service over plain http (http://{host}): "
            "refusing to follow it, a login or token would travel unencrypted; serve the "
            f"token service over https, or list {host} in images.insecure_registries")
    from agent.artifacts.egress import BlockedAddressError, EgressPolicy
    from agent.artifacts.settings import DEFAULT_BLOCKED_NETWORKS

    try:
        EgressPolicy(DEFAULT_BLOCKED_NETWORKS).check_host(parts.hostname, parts.port, host)
    except BlockedAddressError:
        raise RegistryError(
            f"registry {registry} names a token service at a link-local / cloud metadata "
            f"address ({host}): refusing to follow it") from None
    if has_credential and not binding.realm_allows(host, registry):
        raise RegistryError(
            f"registry {registry} names a token service on another host ({host}): the "
            f"registry login is only sent to the hosts it is configured for; if {host} is "
            f"the registry's own token service, add it to {binding.setting}")


def fetch_token(session: requests.Session, realm: str, params: list[tuple[str, str]],
                provider: CredentialProvider, host: str, *, verify: bool | str,
                timeout: float, insecure: Iterable[str] = ()) -> tuple[str, float]:
    """(bearer token, lifetime in seconds) from a registry's token service (`realm`).

    The provider's credential (if any) logs in with HTTP Basic, once `check_realm`
    agreed; errors name the registry and what to check, never the credential.
    """
    credential = provider.get(host)
    check_realm(realm, host, provider.binding, has_credential=credential is not None,
                insecure=insecure)
    auth = (credential.username, credential.password) if credential else None
    try:
        response = session.get(realm, params=params, auth=auth, verify=verify, timeout=timeout)
    except requests.exceptions.SSLError:
        raise RegistryError(
            f"TLS handshake with the token service of {host} failed, certificate "
            "not trusted: set images.ca_bundle"
        ) from None
    except requests.RequestException as exc:
        raise RegistryError(
            f"cannot reach the token service of registry {host} ({type(exc).__name__})"
        ) from None
    if response.status_code in (401, 403):
        raise RegistryError(
            f"the token service of registry {host} refused the login "
            f"({response.status_code}): check the credentials for {host}"
        )
    if response.status_code != 200:
        raise RegistryError(f"the token service of registry {host} answered "
                            f"{response.status_code}")
    body = response.json()
    token = body.get("token") or body.get("access_token")
    if not token:
        raise RegistryError(f"the token service of registry {host} sent no token")
    return str(token), float(body.get("expires_in") or 60)
