"""A small JSON REST client for the Kubernetes API, used by the stand-in controllers.

The controllers are ordinary API clients: they list, watch and patch objects
through the HTTP API like real controllers do, so they work against the
stand-in API server and against any other API server.  Generic dicts are used
instead of the typed official client so that every kind (Routes, Events, ...)
is handled the same way.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import requests
import yaml

log = logging.getLogger(__name__)

Obj = dict[str, Any]

# (group/version, plural, namespaced)
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "pods": ("v1", "pods", True),
    "services": ("v1", "services", True),
    "endpoints": ("v1", "endpoints", True),
    "secrets": ("v1", "secrets", True),
    "configmaps": ("v1", "configmaps", True),
    "events": ("v1", "events", True),
    "namespaces": ("v1", "namespaces", False),
    "nodes": ("v1", "nodes", False),
    "persistentvolumeclaims": ("v1", "persistentvolumeclaims", True),
    "deployments": ("apps/v1", "deployments", True),
    "replicasets": ("apps/v1", "replicasets", True),
    "jobs": ("batch/v1", "jobs", True),
    "ingresses": ("networking.k8s.io/v1", "ingresses", True),
    "ingressclasses": ("networking.k8s.io/v1", "ingressclasses", False),
    "networkpolicies": ("networking.k8s.io/v1", "networkpolicies", True),
    "routes": ("route.openshift.io/v1", "routes", True),
}


class ApiError(Exception):
    """An API call answered with an HTTP error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def key_of(obj: Obj) -> str:
    md = obj.get("metadata", {})
    ns = md.get("namespace") or ""
    return f"{ns}/{md.get('name')}"


def _materialise(data: str | None, path: str | None, tmpdir: str, name: str) -> str | None:
    if data:
        target = os.path.join(tmpdir, name)
        with open(target, "wb") as fh:
            fh.write(base64.b64decode(data))
        return target
    return path


class KubeClient:
    """Thread-safe (one requests.Session per thread) client built from a kubeconfig."""

    def __init__(self, kubeconfig_path: str) -> None:
        with open(kubeconfig_path, encoding="utf-8") as fh:
            cfg = yaml.safe_load(fh)
        ctx_name = cfg.get("current-context")
        contexts = {c["name"]: c["context"] for c in cfg.get("contexts") or []}
        ctx: dict[str, Any] = contexts.get(ctx_name) or next(iter(contexts.values()), {})
        clusters = {c["name"]: c["cluster"] for c in cfg.get("clusters") or []}
        users = {u["name"]: u.get("user") or {} for u in cfg.get("users") or []}
        cluster = clusters.get(ctx.get("cluster")) or next(iter(clusters.values()))
        user = users.get(ctx.get("user"), {})
        self.server = cluster["server"].rstrip("/")
        self._tmp = tempfile.mkdtemp(prefix="kube-ctl-client-")
        self.verify: bool | str = True
        if cluster.get("insecure-skip-tls-verify"):
            self.verify = False
        else:
            ca = _materialise(cluster.get("certificate-authority-data"),
                              cluster.get("certificate-authority"), self._tmp, "ca.crt")
            if ca:
                self.verify = ca
        cert = _materialise(user.get("client-certificate-data"), user.get("client-certificate"),
                            self._tmp, "client.crt")
        key = _materialise(user.get("client-key-data"), user.get("client-key"),
                           self._tmp, "client.key")
        self.cert = (cert, key) if cert and key else None
        self.headers = {"Accept": "application/json"}
        if user.get("token"):
            self.headers["Authorization"] = f"Bearer {user['token']}"
        elif user.get("username"):
            raw = f"{user['username']}:{user.get('password', '')}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        self._local = threading.local()
        self._events: dict[tuple[Any, ...], tuple[str, int]] = {}
        self._events_lock = threading.Lock()

    # -- plumbing -----------------------------------------------------------
    def _session(self) -> requests.Session:
        sess = getattr(self._local, "session", None)
        if sess is None:
            sess = requests.Session()
            sess.headers.update(self.headers)
            sess.verify = self.verify
            sess.cert = self.cert
            sess.trust_env = False
            self._local.session = sess
        return sess

    def path(self, resource: str, namespace: str | None = None, name: str | None = None,
             sub: str | None = None) -> str:
        gv, plural, namespaced = RESOURCES[resource]
        base = "/api/v1" if gv == "v1" else f"/apis/{gv}"
        if namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base

    def request(self, method: str, path: str, body: Any = None, params: dict | None = None,
                content_type: str = "application/json", timeout: float = 30) -> Any:
        headers = {"Content-Type": content_type} if body is not None else {}
        resp = self._session().request(
            method, self.server + path, data=json.dumps(body) if body is not None else None,
            params=params, headers=headers, timeout=timeout, verify=self.verify)
        if resp.status_code >= 400:
            try:
                msg = resp.json().get("message", resp.text)
            except ValueError:
                msg = resp.text
            raise ApiError(resp.status_code, msg)
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return resp.text

    # -- verbs ----------------------------------------------------------------
    def get(self, resource: str, namespace: str | None, name: str) -> Obj | None:
        try:
            return self.request("GET", self.path(resource, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, resource: str, namespace: str | None = None,
             label_selector: str | None = None) -> Obj:
        params = {"labelSelector": label_selector} if label_selector else None
        return self.request("GET", self.path(resource, namespace), params=params)

    def create(self, resource: str, namespace: str | None, body: Obj) -> Obj:
        return self.request("POST", self.path(resource, namespace), body)

    def patch(self, resource: str, namespace: str | None, name: str, body: Obj,
              sub: str | None = None) -> Obj | None:
        try:
            return self.request("PATCH", self.path(resource, namespace, name, sub), body,
                                content_type="application/merge-patch+json")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def patch_status(self, resource: str, namespace: str | None, name: str,
                     status: Obj) -> Obj | None:
        return self.patch(resource, namespace, name, {"status": status}, sub="status")

    def delete(self, resource: str, namespace: str | None, name: str,
               grace_period: int | None = None, propagation: str | None = None,
               uid: str | None = None) -> bool:
        body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_period is not None:
            body["gracePeriodSeconds"] = grace_period
        if propagation:
            body["propagationPolicy"] = propagation
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self.request("DELETE", self.path(resource, namespace, name), body)
            return True
        except ApiError as exc:
            if exc.status in (404, 409):
                return False
            raise

    def watch(self, resource: str, resource_version: str | None,
              stop: threading.Event, timeout: int = 30) -> Iterator[Obj]:
        params: dict[str, Any] = {"watch": "true", "allowWatchBookmarks": "true",
                                  "timeoutSeconds": str(timeout)}
        if resource_version:
            params["resourceVersion"] = resource_version
        resp = self._session().get(self.server + self.path(resource), params=params,
                                   stream=True, timeout=(10, timeout + 15), verify=self.verify)
        try:
            if resp.status_code >= 400:
                raise ApiError(resp.status_code, resp.text[:300])
            for line in resp.iter_lines(chunk_size=1):
                if stop.is_set():
                    return
                if line:
                    yield json.loads(line)
        finally:
            resp.close()

    # -- events ------------------------------------------------------------------
    def event(self, obj: Obj, reason: str, message: str, type_: str = "Normal",
              component: str = "kubelet") -> None:
        md = obj.get("metadata", {})
        ns = md.get("namespace") or "default"
        ts = now_iso()
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{md.get('name', 'x')}.", "namespace": ns},
            "involvedObject": {"kind": obj.get("kind"), "apiVersion": obj.get("apiVersion"),
                               "name": md.get("name"), "namespace": ns, "uid": md.get("uid")},
            "reason": reason, "message": message, "type": type_,
            "source": {"component": component, "host": "harness-node"},
            "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
            "reportingComponent": component, "reportingInstance": "harness-node",
        }
        key = (ns, md.get("uid"), reason, message, type_)
        try:
            with self._events_lock:
                seen = self._events.get(key)
            if seen is not None:  # aggregate like a kubelet: count + lastTimestamp
                name, count = seen
                if self.patch("events", ns, name, {"count": count + 1,
                                                   "lastTimestamp": ts}) is not None:
                    with self._events_lock:
                        self._events[key] = (name, count + 1)
                    return
            created = self.create("events", ns, body)
            with self._events_lock:
                if len(self._events) > 5000:
                    self._events.clear()
                self._events[key] = (created["metadata"]["name"], 1)
        except (ApiError, requests.RequestException, KeyError, TypeError) as exc:
            log.debug("event %s for %s not written: %s", reason, md.get("name"), exc)


class Informer:
    """List+watch one resource across namespaces into a cache; calls on_change(kind, obj)."""

    def __init__(self, client: KubeClient, resource: str, stop: threading.Event,
                 on_change: Callable[[str, Obj], None] | None = None,
                 resync: float = 30.0) -> None:
        self.client = client
        self.resource = resource
        self.stop = stop
        self.on_change = on_change
        self.resync = resync
        self.cache: dict[str, Obj] = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()
        self.available = True

    def items(self) -> list[Obj]:
        with self.lock:
            return list(self.cache.values())

    def get(self, key: str) -> Obj | None:
        with self.lock:
            return self.cache.get(key)

    def _notify(self, kind: str, obj: Obj) -> None:
        if self.on_change:
            try:
                self.on_change(kind, obj)
            except Exception:  # a handler must never kill the informer
                log.exception("informer %s handler failed", self.resource)

    def relist(self) -> str | None:
        data = self.client.list(self.resource)
        fresh = {key_of(o): o for o in data.get("items") or []}
        kind = (data.get("kind") or "").removesuffix("List")
        for o in fresh.values():
            o.setdefault("kind", kind)
            o.setdefault("apiVersion", RESOURCES[self.resource][0])
        with self.lock:
            old = self.cache
            self.cache = fresh
        for k, o in fresh.items():
            if k not in old or old[k].get("metadata", {}).get("resourceVersion") != \
                    o.get("metadata", {}).get("resourceVersion"):
                self._notify("MODIFIED" if k in old else "ADDED", o)
        for k, o in old.items():
            if k not in fresh:
                self._notify("DELETED", o)
        self.synced.set()
        return (data.get("metadata") or {}).get("resourceVersion")

    def run(self) -> None:
        rv: str | None = None
        last_list = 0.0
        while not self.stop.is_set():
            try:
                if rv is None or time.monotonic() - last_list > self.resync:
                    rv = self.relist()
                    last_list = time.monotonic()
                for ev in self.client.watch(self.resource, rv, self.stop):
                    typ = ev.get("type")
                    obj = ev.get("object") or {}
                    if typ == "ERROR":
                        rv = None
                        break
                    new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if new_rv:
                        rv = new_rv
                    if typ == "BOOKMARK":
                        continue
                    k = key_of(obj)
                    with self.lock:
                        if typ == "DELETED":
                            self.cache.pop(k, None)
                        else:
                            self.cache[k] = obj
                    self._notify(typ or "MODIFIED", obj)
                    if time.monotonic() - last_list > self.resync:
                        break
            except ApiError as exc:
                if exc.status == 404:
                    # resource unknown to this API server (e.g. routes): stay quiet
                    self.available = False
                    self.synced.set()
                    self.stop.wait(10)
                else:
                    log.debug("watch %s: %s", self.resource, exc)
                    self.stop.wait(0.5)
                rv = None
            except (requests.RequestException, ValueError) as exc:
                log.debug("watch %s interrupted: %s", self.resource, exc)
                self.stop.wait(0.5)
                rv = None


def label_selector_matches(selector: Obj | None, labels: dict[str, str] | None) -> bool:
    """matchLabels + matchExpressions; a missing/empty selector matches nothing."""
    if not selector:
        return False
    labels = labels or {}
    ml = selector.get("matchLabels")
    me = selector.get("matchExpressions")
    if ml is None and me is None:
        # plain map form (Service.spec.selector)
        ml = {k: v for k, v in selector.items() if isinstance(v, str)}
        if not ml:
            return False
    for k, v in (ml or {}).items():
        if labels.get(k) != v:
            return False
    for expr in me or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def is_owned_by(obj: Obj, owner: Obj) -> bool:
    uid = owner.get("metadata", {}).get("uid")
    return any(r.get("uid") == uid for r in obj.get("metadata", {}).get("ownerReferences") or [])


def owner_ref(owner: Obj, controller: bool = True) -> Obj:
    md = owner["metadata"]
    return {"apiVersion": owner.get("apiVersion"), "kind": owner.get("kind"), "name": md["name"],
            "uid": md.get("uid"), "controller": controller, "blockOwnerDeletion": True}


def pod_is_ready(pod: Obj) -> bool:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def is_terminating(obj: Obj) -> bool:
    return bool(obj.get("metadata", {}).get("deletionTimestamp"))
