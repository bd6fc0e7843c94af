"""The NetworkPolicy of a prediction server, and the egress its storage initializer needs.

Ingress: the ingress controller's namespace, `allow_from_namespaces` and the
agent's pods. Egress (`restrict_egress`): DNS, `extra_egress` and, in
storage-initializer mode, the model store the init container fetches from
(a NetworkPolicy covers every container of the pod, init containers too).

A NetworkPolicy names addresses, not host names. A store whose host is an IP
address in ops' settings (`artifacts.s3_endpoint_url` etc.) gets an ipBlock
by itself; any other host must be covered by an `egress_to` entry of ops
(a host pattern with the peers and ports that reach it), otherwise the
deployment fails before anything is applied and the message says what to add.
Host names are never resolved here: the addresses behind a name change, and a
Service's ClusterIP is not what NetworkPolicy implementations match.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

from agent.errors import InvalidActionError
from agent.images.delivery import DeliveryMode, scheme
from agent.model import DeploymentSpec
from agent.plugins.kubernetes import names
from agent.plugins.kubernetes.settings import KubernetesSettings, ServerProfile

#: `fetcher_env` keys of the stores the storage initializer is told about (agent.images.fetcher)
_ENV = "MGMT_AGENT_ARTIFACTS__"


@dataclass(frozen=True)
class Endpoint:
    """A host the storage initializer connects to, and which setting or field named it."""

    host: str
    port: int
    source: str
    ops_chosen: bool  # from ops' settings (an address there is trusted), not from the order


def _url_endpoint(url: str, source: str, ops_chosen: bool) -> Endpoint | None:
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    default = 80 if parts.scheme == "http" else 443
    return Endpoint(parts.hostname, port or default, source, ops_chosen)


def store_endpoints(uri: str, fetcher_env: Mapping[str, str]) -> list[Endpoint] | None:
    """Hosts a `fetch-model` of `uri` connects to; None when they cannot be known in advance."""
    found = scheme(uri)
    env = {key.removeprefix(_ENV).lower(): value for key, value in fetcher_env.items()}
    if found == "s3":
        if env.get("s3_endpoint_url"):
            return [e for e in [_url_endpoint(env["s3_endpoint_url"],
                                              "artifacts.s3_endpoint_url", True)] if e]
        region = env.get("s3_region")
        host = f"s3.{region}.amazonaws.com" if region else "s3.amazonaws.com"
        return [Endpoint(host, 443, "public S3 (no artifacts.s3_endpoint_url)", True)]
    if found == "gs":
        url = env.get("gcs_endpoint_url") or "https://storage.googleapis.com"
        return [e for e in [_url_endpoint(url, "artifacts.gcs_endpoint_url", True)] if e]
    if found == "models":
        if not env.get("mlflow_tracking_uri"):
            return None
        return [e for e in [_url_endpoint(env["mlflow_tracking_uri"],
                                          "artifacts.mlflow_tracking_uri", True)] if e]
    if found in ("http", "https"):
        return [e for e in [_url_endpoint(uri, "the model URI", False)] if e]
    if found == "oci":
        host = uri.split("://", 1)[1].split("/", 1)[0]
        return [e for e in [_url_endpoint(host, "the model URI", False)] if e]
    return []  # pvc:// is a volume: no init container, no egress


#: what an egress_to entry without ports opens for a host the order names
WEB_PORTS = (80, 443)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _rule(spec: DeploymentSpec, endpoint: Endpoint, settings: KubernetesSettings,
          ) -> dict[str, Any]:
    port = [{"protocol": "TCP", "port": endpoint.port}]
    address = _address(endpoint.host)
    block = [{"ipBlock": {"cidr": f"{address}/{address.max_prefixlen}"}}] if address else []
    for target in settings.network_policy.egress_to:
        if any(fnmatchcase(endpoint.host.lower(), p.lower()) for p in target.hosts):
            to = [dict(peer) for peer in target.to] or block
            if not (to or target.ports or endpoint.ops_chosen or endpoint.port in WEB_PORTS):
                # a host name, no peers, no ports: the order's port would open to every address
                raise InvalidActionError(
                    f"deployment {spec.id}: the model URI names port {endpoint.port} of "
                    f"{endpoint.host}; the egress_to entry covering that host lists no ports, "
                    "which opens only 80 and 443 for a model URI: list the port in "
                    "plugin.kubernetes.network_policy.egress_to[].ports (chart value "
                    "predictionServer.networkPolicy.egressTo)")
            return {**({"to": to} if to else {}), "ports": [dict(p) for p in target.ports] or port}
    if address and endpoint.ops_chosen:
        return {"to": block, "ports": port}
    raise InvalidActionError(
        f"deployment {spec.id}: the storage initializer must reach {endpoint.host}:"
        f"{endpoint.port} ({endpoint.source}) but the NetworkPolicy restricts egress and no "
        "rule covers that host: add it to plugin.kubernetes.network_policy.egress_to (chart "
        "value predictionServer.networkPolicy.egressTo: hosts, and the peers/ports that reach "
        "it), or set restrict_egress false")


def store_egress(spec: DeploymentSpec, settings: KubernetesSettings, mode: DeliveryMode,
                 fetcher_env: Mapping[str, str]) -> list[dict[str, Any]]:
    """Egress rules the storage initializer needs; raises when one cannot be derived."""
    np = settings.network_policy
    if not (np.enabled and np.restrict_egress) or mode is not DeliveryMode.STORAGE_INITIALIZER:
        return []
    uri = spec.model.uri or ""
    endpoints = store_endpoints(uri, fetcher_env)
    if endpoints is None:
        raise InvalidActionError(
            f"deployment {spec.id}: the NetworkPolicy restricts egress and the MLflow server "
            f"behind {scheme(uri)}:// is not known in advance: set artifacts.mlflow_tracking_uri "
            "(chart value artifacts.mlflowTrackingUri) and cover its host in "
            "plugin.kubernetes.network_policy.egress_to")
    rules: list[dict[str, Any]] = []
    for endpoint in endpoints:
        rule = _rule(spec, endpoint, settings)
        if rule not in rules:
            rules.append(rule)
    return rules


def network_policy(spec: DeploymentSpec, settings: KubernetesSettings, profile: ServerProfile,
                   metadata: dict[str, Any], mode: DeliveryMode,
                   fetcher_env: Mapping[str, str]) -> dict[str, Any]:
    """The NetworkPolicy object of one prediction server (`metadata`: name, labels, ...)."""
    np = settings.network_policy
    namespaces = [np.ingress_controller_namespace, *np.allow_from_namespaces]
    peers: list[dict[str, Any]] = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
        for ns in namespaces
    ]
    if np.agent_pod_labels:
        peers.append({"podSelector": {"matchLabels": dict(np.agent_pod_labels)}})
    ports = [{"protocol": "TCP", "port": profile.port}]
    if profile.metrics_port and profile.metrics_port != profile.port:
        ports.append({"protocol": "TCP", "port": profile.metrics_port})
    body: dict[str, Any] = {
        "podSelector": {"matchLabels": names.selector_labels(spec.id)},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": peers, "ports": ports}],
    }
    if np.restrict_egress:
        body["policyTypes"].append("Egress")
        dns = {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
        body["egress"] = [dns, *store_egress(spec, settings, mode, fetcher_env),
                          *np.extra_egress]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": metadata, "spec": body}
