"""Defaulting of the fields controllers and clients rely on."""

from __future__ import annotations

import ipaddress
import threading
from typing import Any

Obj = dict[str, Any]


def _pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    if "serviceAccountName" in spec and "serviceAccount" not in spec:
        spec["serviceAccount"] = spec["serviceAccountName"]
    for group in ("containers", "initContainers"):
        for c in spec.get(group) or []:
            if not isinstance(c, dict):
                continue
            image = str(c.get("image", ""))
            tag = image.rsplit("/", 1)[-1]
            latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
            c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            c.setdefault("resources", {})
            for p in c.get("ports") or []:
                if isinstance(p, dict):
                    p.setdefault("protocol", "TCP")
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                pr = c.get(probe)
                if isinstance(pr, dict):
                    pr.setdefault("timeoutSeconds", 1)
                    pr.setdefault("periodSeconds", 10)
                    pr.setdefault("successThreshold", 1)
                    pr.setdefault("failureThreshold", 3)
                    http = pr.get("httpGet")
                    if isinstance(http, dict):
                        http.setdefault("scheme", "HTTP")
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("fieldRef") if isinstance(e, dict) else None
                if isinstance(ref, dict):
                    ref.setdefault("apiVersion", "v1")
    for v in spec.get("volumes") or []:
        if not isinstance(v, dict):
            continue
        for src in ("secret", "configMap"):
            if isinstance(v.get(src), dict):
                v[src].setdefault("defaultMode", 420)


def _template(spec: Obj) -> None:
    tmpl = spec.get("template")
    if isinstance(tmpl, dict):
        tmpl.setdefault("metadata", {})
        if isinstance(tmpl.get("spec"), dict):
            _pod_spec(tmpl["spec"])


class ClusterIPs:
    """Allocates Service clusterIPs from 10.96.0.0/16."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.net = ipaddress.ip_network("10.96.0.0/16")
        self.used: set[str] = {"10.96.0.1"}

    def reserve(self, ip: str) -> None:
        with self.lock:
            self.used.add(ip)

    def release(self, ip: str) -> None:
        with self.lock:
            self.used.discard(ip)

    def allocate(self) -> str:
        with self.lock:
            for host in self.net.hosts():
                s = str(host)
                if s not in self.used and not s.endswith(".0"):
                    self.used.add(s)
                    return s
        raise RuntimeError("service IP range exhausted")


def apply_defaults(plural: str, obj: Obj, ips: ClusterIPs | None = None) -> None:
    spec = obj.get("spec")
    if plural == "namespaces":
        spec = obj.setdefault("spec", {})
        spec.setdefault("finalizers", ["kubernetes"])
        obj.setdefault("status", {}).setdefault("phase", "Active")
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = \
            obj["metadata"]["name"]
        return
    if plural == "secrets":
        obj.setdefault("type", "Opaque")
        return
    if not isinstance(spec, dict):
        if plural in ("pods", "services"):
            spec = obj.setdefault("spec", {})
        else:
            return
    if plural == "pods":
        _pod_spec(spec)
        obj.setdefault("status", {}).setdefault("phase", "Pending")
        obj["status"].setdefault("qosClass", "BestEffort")
    elif plural in ("deployments",):
        spec.setdefault("replicas", 1)
        strategy = spec.setdefault("strategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            ru = strategy.setdefault("rollingUpdate", {})
            ru.setdefault("maxUnavailable", "25%")
            ru.setdefault("maxSurge", "25%")
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        _template(spec)
    elif plural in ("replicasets", "statefulsets", "daemonsets"):
        if plural != "daemonsets":
            spec.setdefault("replicas", 1)
        _template(spec)
    elif plural == "jobs":
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
        tmpl = spec.get("template")
        if isinstance(tmpl, dict) and isinstance(tmpl.get("spec"), dict):
            tmpl["spec"].setdefault("restartPolicy", "Never")
        _template(spec)
        uid = obj["metadata"].get("uid")
        if uid and not spec.get("manualSelector"):
            labels = {"batch.kubernetes.io/controller-uid": uid,
                      "batch.kubernetes.io/job-name": obj["metadata"]["name"],
                      "controller-uid": uid, "job-name": obj["metadata"]["name"]}
            spec.setdefault("selector", {"matchLabels": {
                "batch.kubernetes.io/controller-uid": uid}})
            if isinstance(tmpl, dict):
                tmpl.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
    elif plural == "services":
        stype = spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if stype != "ExternalName":
            spec.setdefault("internalTrafficPolicy", "Cluster")
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            if ips is not None and not spec.get("clusterIP"):
                spec["clusterIP"] = ips.allocate()
            elif ips is not None and spec["clusterIP"] != "None":
                ips.reserve(spec["clusterIP"])
            if spec.get("clusterIP"):
                spec.setdefault("clusterIPs", [spec["clusterIP"]])
        for p in spec.get("ports") or []:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")
                if "port" in p:
                    p.setdefault("targetPort", p["port"])
        obj.setdefault("status", {}).setdefault("loadBalancer", {})
    elif plural == "ingresses":
        for rule in spec.get("rules") or []:
            for path in ((rule or {}).get("http") or {}).get("paths") or []:
                if isinstance(path, dict):
                    path.setdefault("pathType", "ImplementationSpecific")
        obj.setdefault("status", {}).setdefault("loadBalancer", {})
    elif plural == "networkpolicies":
        spec.setdefault("policyTypes", ["Ingress"] + (["Egress"] if spec.get("egress") else []))
    elif plural == "horizontalpodautoscalers":
        spec.setdefault("minReplicas", 1)
    elif plural == "persistentvolumeclaims":
        spec.setdefault("volumeMode", "Filesystem")
        obj.setdefault("status", {}).setdefault("phase", "Pending")
