"""KubeClient: the agent's one door to the Kubernetes API.

A thin wrapper over the official client's REST layer (configuration loading,
authentication, TLS) that works on plain dicts, so the plugin, the Kaniko
builder and the tests share one small vocabulary: `apply` (server-side apply),
`get`, `list` (paginated: `listing`), `create`, `delete`, `pod_logs`, `events_for`, `watch`.

It carries what every boundary of the agent carries: retries of transient
failures (connection errors, 429, 5xx) with exponential backoff and jitter,
honouring `Retry-After`; a client-side QPS/burst token bucket; and mapping of
API errors to `agent.errors` — a 403 names the verb, the resource and the
namespace the service account lacks, so ops know which Role rule to add.
"""

from __future__ import annotations

import base64
import builtins
import json
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlencode

import urllib3

from agent.artifacts.credentials import register_credentials
from agent.errors import AgentError, ClusterError, ConfigError, ConflictError, NotFoundError
from agent.plugins.kubernetes.listing import list_all
from agent.plugins.kubernetes.ratelimit import TokenBucket
from agent.plugins.kubernetes.settings import KubernetesSettings
from agent.retry import error_for_status, retry_after_of, retrying

__all__ = ["ConflictError", "KubeClient", "NotFoundError", "TokenBucket"]

log = logging.getLogger(__name__)

FIELD_MANAGER = "management-agent"

# kind -> (plural, namespaced); the API version comes from the object or the caller.
RESOURCES: dict[str, tuple[str, bool]] = {
    "Pod": ("pods", True),
    "Service": ("services", True),
    "Secret": ("secrets", True),
    "ConfigMap": ("configmaps", True),
    "ServiceAccount": ("serviceaccounts", True),
    "Event": ("events", True),
    "Endpoints": ("endpoints", True),
    "PersistentVolumeClaim": ("persistentvolumeclaims", True),
    "Namespace": ("namespaces", False),
    "Node": ("nodes", False),
    "Deployment": ("deployments", True),
    "ReplicaSet": ("replicasets", True),
    "StatefulSet": ("statefulsets", True),
    "Job": ("jobs", True),
    "Ingress": ("ingresses", True),
    "NetworkPolicy": ("networkpolicies", True),
    "HorizontalPodAutoscaler": ("horizontalpodautoscalers", True),
    "PodDisruptionBudget": ("poddisruptionbudgets", True),
    "Role": ("roles", True),
    "RoleBinding": ("rolebindings", True),
    "Lease": ("leases", True),
    "Route": ("routes", True),
    "HTTPRoute": ("httproutes", True),
}


def _load_configuration(settings: KubernetesSettings) -> Any:
    from kubernetes import client, config

    configuration = client.Configuration()
    in_cluster = settings.in_cluster
    if in_cluster is None:
        in_cluster = settings.kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(
                config_file=str(settings.kubeconfig) if settings.kubeconfig else None,
                context=settings.context,
                client_configuration=configuration,
                persist_config=False,
            )
    except config.ConfigException as exc:
        where = "in-cluster service account" if in_cluster else (
            f"kubeconfig {settings.kubeconfig or '(default)'}"
            + (f" context {settings.context}" if settings.context else "")
        )
        raise ConfigError(f"plugin.kubernetes: cannot load the {where}: {exc}") from exc
    return configuration


class KubeClient:
    """Dict-in, dict-out access to the Kubernetes API with retries and error mapping."""

    def __init__(self, settings: KubernetesSettings, *, configuration: Any = None) -> None:
        from kubernetes import client

        self.settings = settings
        self.namespace = settings.namespace
        configuration = configuration or _load_configuration(settings)
        configuration.retries = False  # retries are ours (agent.retry), not urllib3's
        self._api = client.ApiClient(configuration)
        self._api.user_agent = "management-agent"
        self._bucket = TokenBucket(settings.qps, settings.burst)
        self._retries = settings.api_retries
        self._timeout = settings.api_timeout_seconds

    @property
    def host(self) -> str:
        """The API server URL."""
        return str(self._api.configuration.host)

    def close(self) -> None:
        """Release connections."""
        self._api.close()

    # ---- paths -------------------------------------------------------------------------

    @staticmethod
    def resource(kind: str) -> tuple[str, bool]:
        """(plural, namespaced) of a kind; unknown kinds are guessed as namespaced 'kinds'."""
        return RESOURCES.get(kind, (kind.lower() + "s", True))

    def path(self, api_version: str, kind: str, name: str | None = None,
             namespace: str | None = None, subresource: str | None = None) -> str:
        """The REST path of a collection or an object."""
        plural, namespaced = self.resource(kind)
        base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        if namespaced:
            base += f"/namespaces/{namespace or self.namespace}"
        base += f"/{plural}"
        if name:
            base += f"/{name}"
        if subresource:
            base += f"/{subresource}"
        return base

    # ---- the one request function ------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        verb: str | None = None,
        raw: bool = False,
        stream: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """One API call with rate limiting, retries and error mapping.

        Returns the decoded JSON body (or text with `raw`, or the open urllib3
        response with `stream`). `verb` names the RBAC verb for error messages.
        """
        url = path
        params = {k: v for k, v in (query or {}).items() if v is not None}
        if params:
            url += "?" + urlencode(params)
        headers = {"Accept": "application/json" if not raw else "*/*"}
        if body is not None:
            headers["Content-Type"] = content_type
        rbac_verb = verb or _verb(method, path, params)

        def attempt() -> Any:
            self._bucket.acquire()
            method_, full_url, header_params, body_, _ = self._api.param_serialize(
                method=method, resource_path=url, header_params=dict(headers), body=body,
                auth_settings=["BearerToken"],
            )
            try:
                response = self._api.call_api(
                    method_, full_url, header_params=header_params, body=body_,
                    _request_timeout=None if stream else (timeout or self._timeout),
                )
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                error = ClusterError(f"cannot reach the Kubernetes API at {self.host}: {exc}")
                error.transient = True
                raise error from exc
            status = response.status
            if stream and 200 <= status < 300:
                return response.response
            data = response.read()
            if 200 <= status < 300:
                if raw:
                    return data.decode("utf-8", "replace") if data else ""
                return json.loads(data) if data else {}
            raise error_for_status(
                status, _error_message(status, _status_message(data), method, path, rbac_verb),
                ClusterError, retry_after=retry_after_of(response.headers))

        attempts = self._retries + 1
        try:
            return retrying(f"{method} {path}", attempts, logger=log)(attempt)
        except AgentError as exc:
            if not exc.transient:
                raise
            error = ClusterError(f"{exc} (gave up after {attempts} attempts)")
            error.transient, error.status = True, exc.status
            raise error from exc

    # ---- verbs -------------------------------------------------------------------------

    def apply(self, obj: Mapping[str, Any], *, namespace: str | None = None,
              field_manager: str = FIELD_MANAGER, force: bool = True) -> dict[str, Any]:
        """Server-side apply `obj`; returns the live object. Re-applying the same is a no-op."""
        meta = obj.get("metadata", {})
        path = self.path(obj["apiVersion"], obj["kind"], meta["name"],
                         namespace or meta.get("namespace"))
        return dict(self.request(
            "PATCH", path, body=dict(obj), content_type="application/apply-patch+yaml",
            query={"fieldManager": field_manager, "force": "true" if force else None},
            verb="patch",
        ))

    def create(self, obj: Mapping[str, Any], *, namespace: str | None = None,
               exist_ok: bool = False) -> dict[str, Any]:
        """POST `obj`; with `exist_ok`, a 409 returns the existing object ("already there")."""
        meta = obj.get("metadata", {})
        ns = namespace or meta.get("namespace")
        try:
            return dict(self.request(
                "POST", self.path(obj["apiVersion"], obj["kind"], namespace=ns), body=dict(obj)))
        except ConflictError:
            if not exist_ok or "name" not in meta:
                raise
            existing = self.get(obj["apiVersion"], obj["kind"], meta["name"], ns)
            if existing is None:
                raise
            return existing

    def replace(self, obj: Mapping[str, Any], *, namespace: str | None = None
                ) -> dict[str, Any]:
        """PUT `obj`; with `metadata.resourceVersion` set, a concurrent change is a Conflict."""
        meta = obj.get("metadata", {})
        path = self.path(obj["apiVersion"], obj["kind"], meta["name"],
                         namespace or meta.get("namespace"))
        return dict(self.request("PUT", path, body=dict(obj)))

    def patch(self, api_version: str, kind: str, name: str, patch: Mapping[str, Any],
              namespace: str | None = None) -> dict[str, Any]:
        """JSON merge patch (RFC 7386) of an object; returns the live object."""
        return dict(self.request(
            "PATCH", self.path(api_version, kind, name, namespace), body=dict(patch),
            content_type="application/merge-patch+json"))

    def get(self, api_version: str, kind: str, name: str,
            namespace: str | None = None) -> dict[str, Any] | None:
        """The live object, or None when it does not exist."""
        try:
            return dict(self.request("GET", self.path(api_version, kind, name, namespace)))
        except NotFoundError:
            return None

    def list(self, api_version: str, kind: str, namespace: str | None = None, *,
             label_selector: str | None = None,
             field_selector: str | None = None) -> list[dict[str, Any]]:
        """Objects of a kind, filtered by selectors, read in pages (`listing.list_all`)."""
        return list_all(self, api_version, kind, namespace, page_size=self.settings.list_page_size,
                        label_selector=label_selector, field_selector=field_selector)

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None,
               *, propagation: str = "Background") -> bool:
        """Delete an object; False when it was already gone (404 is success)."""
        try:
            self.request(
                "DELETE", self.path(api_version, kind, name, namespace),
                body={"kind": "DeleteOptions", "apiVersion": "v1",
                      "propagationPolicy": propagation},
            )
        except NotFoundError:
            return False
        return True

    def pod_logs(self, name: str, namespace: str | None = None, *,
                 container: str | None = None, tail_lines: int | None = None) -> str:
        """A container's log (the last `tail_lines` lines)."""
        return str(self.request(
            "GET", self.path("v1", "Pod", name, namespace, "log"),
            query={"container": container, "tailLines": tail_lines}, raw=True,
        ))

    def events_for(self, kind: str, name: str,
                   namespace: str | None = None) -> builtins.list[dict[str, Any]]:
        """Events about one object, oldest first."""
        events = self.list(
            "v1", "Event", namespace,
            field_selector=f"involvedObject.kind={kind},involvedObject.name={name}",
        )
        # a server that ignores the field selector still gets filtered here
        events = [e for e in events if e.get("involvedObject", {}).get("name") == name
                  and e.get("involvedObject", {}).get("kind") == kind]
        return sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")

    def read_secret(self, name: str, namespace: str | None = None) -> dict[str, str]:
        """The decoded `data` of a secret (never logged); its credential fields (not every
        value: "true" or a region would mangle every log line) are scrubbed from now on."""
        secret = self.get("v1", "Secret", name, namespace)
        if secret is None:
            raise NotFoundError(
                f"secret {name} not found in namespace {namespace or self.namespace}")
        decoded = {k: base64.b64decode(v).decode("utf-8", "replace")
                   for k, v in (secret.get("data") or {}).items()}
        decoded.update(secret.get("stringData") or {})
        register_credentials(decoded)
        return decoded

    def watch(self, api_version: str, kind: str, namespace: str | None = None, *,
              label_selector: str | None = None, resource_version: str | None = None,
              timeout_seconds: int = 60) -> Iterator[dict[str, Any]]:
        """Watch events ({"type", "object"}) until the server ends the watch."""
        response = self.request(
            "GET", self.path(api_version, kind, namespace=namespace),
            query={"watch": "1", "labelSelector": label_selector,
                   "resourceVersion": resource_version, "timeoutSeconds": timeout_seconds},
            stream=True, verb="watch",
        )
        try:
            buffer = b""
            for chunk in response.stream(4096, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            response.release_conn()


def _error_message(status: int, message: str, method: str, path: str, verb: str) -> str:
    """What an error answer means for ops: a 403 names the verb, resource and namespace."""
    resource, namespace, _ = _describe(path)
    where = f" in namespace {namespace}" if namespace else " (cluster scope)"
    if status == 403:
        return (f"forbidden: the agent's service account cannot {verb} {resource}{where}: "
                f"grant it in the chart's Role (rbac) (API server: {message})")
    if status == 401:
        return (f"unauthorized: the Kubernetes API rejected the agent's credentials "
                f"(expired token or wrong kubeconfig): {message}")
    if status == 404:
        return f"not found: {method} {path}: {message}"
    if status == 409:
        return f"conflict: {method} {path}: {message}"
    return f"the Kubernetes API refused {method} {path} (HTTP {status}): {message}"


def _status_message(data: bytes | None) -> str:
    if not data:
        return "(no body)"
    try:
        body = json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")[:500]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("reason") or body)[:1000]
    return str(body)[:500]


def _verb(method: str, path: str, params: Mapping[str, Any]) -> str:
    method = method.upper()
    if method == "GET":
        if params.get("watch"):
            return "watch"
        return "get" if _describe(path)[2] else "list"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
        method, method.lower())


def _describe(path: str) -> tuple[str, str | None, str | None]:
    """(resource[.group][/subresource], namespace, name) of a REST path."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    group = ""
    if parts and parts[0] == "apis" and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        rest = parts[2:]
    namespace = None
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) > 2:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0] if rest else "?"
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    full = f"{resource}.{group}" if group else resource
    if sub:
        full += f"/{sub}"
    return full, namespace, name
