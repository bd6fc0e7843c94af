"""How a prediction server is reached from outside: Ingress, Route or HTTPRoute, and its URL.

The public URL of a deployment is `outfacing_url_root + deployment id`, plus
the server profile's predict path for what a client calls. Modes:

* `nginx`: ingress-nginx regex path `<prefix>/<id>(/|$)(.*)` rewritten to
  `/$2`, so the server sees its own paths; `force-ssl-redirect` only for https.
* `prefix`: a plain `Prefix` path; the server sees the full path.
* `openshift-route`: a route.openshift.io/v1 Route with haproxy's rewrite-target.
* `gateway`: a Gateway API HTTPRoute with a `ReplacePrefixMatch` rewrite.
* `none`: nothing public; the URL is the in-cluster Service URL.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from agent.errors import InvalidActionError
from agent.model import DeploymentSpec
from agent.plugins.kubernetes import names
from agent.plugins.kubernetes.profiles import resolve_profile
from agent.plugins.kubernetes.settings import KubernetesSettings


def _root(settings: KubernetesSettings) -> tuple[str, str | None, str]:
    """(scheme, host or None for IP addresses, path prefix without trailing '/')."""
    parts = urlsplit(settings.outfacing_url_root)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidActionError(
            f"plugin.kubernetes.outfacing_url_root {settings.outfacing_url_root!r} must be an "
            "absolute http(s) URL"
        )
    host: str | None = parts.hostname
    try:
        ipaddress.ip_address(host or "")
        host = None  # an Ingress host must be a DNS name; an IP root matches any host
    except ValueError:
        pass
    return parts.scheme, host, parts.path.rstrip("/")


def public_base_url(deployment_id: str, settings: KubernetesSettings) -> str:
    """Where the deployment's server root is reached (no trailing '/')."""
    if settings.ingress_mode == "none":
        name = names.object_name(deployment_id, settings.name_prefix)
        port = "" if settings.service_port == 80 else f":{settings.service_port}"
        return f"http://{name}.{settings.namespace}.svc.{settings.cluster_domain}{port}"
    _root(settings)  # validates
    return f"{settings.outfacing_url_root.rstrip('/')}/{deployment_id}"


def prediction_url(spec: DeploymentSpec, settings: KubernetesSettings) -> str:
    """The URL a client posts predictions to."""
    return public_base_url(spec.id, settings) + resolve_profile(spec, settings).predict_path


def health_url(spec: DeploymentSpec, settings: KubernetesSettings) -> str:
    """The server's health path through the public URL."""
    return public_base_url(spec.id, settings) + resolve_profile(spec, settings).health_path


def render_exposure(
    spec: DeploymentSpec,
    settings: KubernetesSettings,
    name: str,
    labels: dict[str, str],
    annotations: dict[str, str],
) -> list[dict[str, Any]]:
    """The Ingress / Route / HTTPRoute exposing the deployment's Service (none for `none`)."""
    mode = settings.ingress_mode
    if mode == "none":
        return []
    scheme, host, prefix = _root(settings)
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": settings.namespace,
        "labels": dict(labels),
        "annotations": dict(annotations),
    }
    if mode in ("nginx", "prefix"):
        return [_ingress(spec, settings, metadata, scheme, host, prefix)]
    if mode == "openshift-route":
        return [_route(spec, settings, metadata, scheme, host, prefix)]
    return [_httproute(spec, settings, metadata, host, prefix)]


def _ingress(
    spec: DeploymentSpec, settings: KubernetesSettings, metadata: dict[str, Any],
    scheme: str, host: str | None, prefix: str,
) -> dict[str, Any]:
    backend = {"service": {"name": metadata["name"], "port": {"name": "http"}}}
    if settings.ingress_mode == "nginx":
        metadata["annotations"].update({
            "nginx.ingress.kubernetes.io/use-regex": "true",
            "nginx.ingress.kubernetes.io/rewrite-target": "/$2",
        })
        if scheme == "https":
            metadata["annotations"]["nginx.ingress.kubernetes.io/force-ssl-redirect"] = "true"
        path = {"path": f"{prefix}/{spec.id}(/|$)(.*)", "pathType": "ImplementationSpecific",
                "backend": backend}
    else:
        path = {"path": f"{prefix}/{spec.id}", "pathType": "Prefix", "backend": backend}
    metadata["annotations"].update(settings.ingress_annotations)
    rule: dict[str, Any] = {"http": {"paths": [path]}}
    if host:
        rule["host"] = host
    body: dict[str, Any] = {"rules": [rule]}
    if settings.ingress_class_name:
        body["ingressClassName"] = settings.ingress_class_name
    if scheme == "https" and (host or settings.tls_secret_name):
        tls: dict[str, Any] = {}
        if host:
            tls["hosts"] = [host]
        if settings.tls_secret_name:
            tls["secretName"] = settings.tls_secret_name
        body["tls"] = [tls]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata,
            "spec": body}


def _route(
    spec: DeploymentSpec, settings: KubernetesSettings, metadata: dict[str, Any],
    scheme: str, host: str | None, prefix: str,
) -> dict[str, Any]:
    metadata["annotations"]["haproxy.router.openshift.io/rewrite-target"] = "/"
    metadata["annotations"].update(settings.ingress_annotations)
    body: dict[str, Any] = {
        "path": f"{prefix}/{spec.id}",
        "to": {"kind": "Service", "name": metadata["name"], "weight": 100},
        "port": {"targetPort": "http"},
        "wildcardPolicy": "None",
    }
    if host:
        body["host"] = host
    if scheme == "https":
        body["tls"] = {"termination": "edge", "insecureEdgeTerminationPolicy": "Redirect"}
    return {"apiVersion": "route.openshift.io/v1", "kind": "Route", "metadata": metadata,
            "spec": body}


def _httproute(
    spec: DeploymentSpec, settings: KubernetesSettings, metadata: dict[str, Any],
    host: str | None, prefix: str,
) -> dict[str, Any]:
    # KubernetesSettings refuses gateway mode without parentRefs (and so does the chart)
    metadata["annotations"].update(settings.ingress_annotations)
    body: dict[str, Any] = {
        "parentRefs": [dict(ref) for ref in settings.gateway_parent_refs],
        "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": f"{prefix}/{spec.id}"}}],
            "filters": [{
                "type": "URLRewrite",
                "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}},
            }],
            "backendRefs": [{"name": metadata["name"], "port": settings.service_port}],
        }],
    }
    if host:
        body["hostnames"] = [host]
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": metadata, "spec": body}
