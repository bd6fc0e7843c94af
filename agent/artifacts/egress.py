"""Where model fetches may connect: a guard against server-side request forgery.

Whoever names a model URI (the control plane, an MLflow tagger) chooses the host
the agent connects to. `artifacts.blocked_networks` (default: link-local and the
cloud metadata addresses, see settings.DEFAULT_BLOCKED_NETWORKS) lists the
networks a fetch may not reach, `artifacts.allowed_networks` the exceptions.
Two checks:

- before a request: the host name is resolved and *every* address checked, so
  the refusal names the host, the address and the setting;
- whenever a connection is made (`guard_session`), redirects included: the
  name is checked again before connecting, and the address actually connected
  to after, which covers DNS answers that change in between (rebinding).

Loopback and private networks stay allowed by default: in-cluster stores
(MinIO, a registry Service) live there, and the agent pod's own loopback offers
nothing the agent does not already have. Ops who want more add CIDRs.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from agent.artifacts.settings import ArtifactSettings
from agent.errors import ArtifactError
from agent.logs import redact_uri

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedAddressError(ArtifactError):
    """A fetch would connect to an address the egress policy blocks (never retried)."""


@lru_cache(maxsize=64)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


class EgressPolicy:
    """Blocked and allowed networks, from the artifact settings."""

    def __init__(self, blocked: Iterable[str], allowed: Iterable[str] = ()) -> None:
        self.blocked = _networks(tuple(blocked))
        self.allowed = _networks(tuple(allowed))

    @classmethod
    def of(cls, settings: ArtifactSettings) -> EgressPolicy:
        return cls(settings.blocked_networks, settings.allowed_networks)

    def blocking(self, address: str) -> Network | None:
        """The blocked network holding `address`, or None when it may be reached."""
        ip: Address = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
        if any(ip in net for net in self.allowed if net.version == ip.version):
            return None
        for net in self.blocked:
            if net.version == ip.version and ip in net:
                return net
        return None

    def refusal(self, what: str, host: str, address: str, net: Network) -> BlockedAddressError:
        shown = host if host == address else f"{host} ({address})"
        return BlockedAddressError(
            f"{what}: refusing to connect to {shown}: the address is in {net}, which "
            "artifacts.blocked_networks blocks (link-local / cloud metadata by default); "
            "if this host really serves models, add its address to artifacts.allowed_networks"
        )

    def check_host(self, host: str, port: int | None, what: str) -> None:
        """Resolve `host` and refuse when any of its addresses is blocked."""
        if not self.blocked:
            return
        bare = host.strip("[]")
        try:
            infos = socket.getaddrinfo(bare, port or 443, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            return  # unresolvable here (e.g. only a proxy resolves it): the connection check stays
        for info in infos:
            address = str(info[4][0])
            net = self.blocking(address)
            if net is not None:
                raise self.refusal(what, bare, address, net)

    def check_url(self, url: str, what: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.hostname:
            self.check_host(parts.hostname, parts.port, what or redact_uri(url))

    def check_peer(self, sock: socket.socket, host: str) -> None:
        """Refuse a connection already made to a blocked address (closes the socket)."""
        try:
            address = str(sock.getpeername()[0])
        except OSError:
            return
        net = self.blocking(address)
        if net is not None:
            sock.close()
            raise self.refusal(f"connection to {host}", host, address, net)


def _guarded_pools(policy: EgressPolicy) -> dict[str, type[HTTPConnectionPool]]:
    def new_conn(base: Any) -> Any:
        def _new_conn(self: Any) -> socket.socket:
            # before connecting (no packet to a blocked address, redirects included), then
            # the address really connected to (a DNS answer may change in between)
            policy.check_host(str(self.host), self.port, f"connection to {self.host}")
            sock = base._new_conn(self)
            policy.check_peer(sock, str(self.host))
            return sock

        return _new_conn

    http_conn = type("GuardedHTTPConnection", (HTTPConnection,),
                     {"_new_conn": new_conn(HTTPConnection)})
    https_conn = type("GuardedHTTPSConnection", (HTTPSConnection,),
                      {"_new_conn": new_conn(HTTPSConnection)})
    http_pool = type("GuardedHTTPConnectionPool", (HTTPConnectionPool,),
                     {"ConnectionCls": http_conn})
    https_pool = type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,),
                      {"ConnectionCls": https_conn})
    return {"http": http_pool, "https": https_pool}


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _guarded_pools(self._policy)
        self.poolmanager.key_fn_by_scheme = dict(self.poolmanager.key_fn_by_scheme)


def guard_session(session: requests.Session, settings: ArtifactSettings) -> requests.Session:
    """Make every connection of `session` (redirects included) obey the egress policy."""
    policy = EgressPolicy.of(settings)
    if policy.blocked:
        session.mount("http://", _GuardedAdapter(policy))
        session.mount("https://", _GuardedAdapter(policy))
    return session


def guarded_session(settings: ArtifactSettings) -> requests.Session:
    return guard_session(requests.Session(), settings)
