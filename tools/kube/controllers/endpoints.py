"""Endpoints controller: Service selector -> ready pods, targetPort -> the pod's port.

Each pod has an address of its own (``status.podIP``); a named targetPort is
looked up in the pod's container ports, as kube-controller-manager does. One
subset per pod (a real controller groups pods with equal ports; same meaning).
"""

from __future__ import annotations

import logging

import requests

from .base import Controller
from .client import ApiError, Obj, is_terminating, label_selector_matches, owner_ref, pod_is_ready

log = logging.getLogger(__name__)


def pod_port(pod: Obj, target: object) -> int | None:
    """The container port a Service targetPort names in this pod (None: no such port)."""
    if isinstance(target, int) or str(target).isdigit():
        return int(str(target))
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target:
                return int(p["containerPort"])
    return None


def endpoints_for(svc: Obj, pods: list[Obj]) -> list[Obj]:
    ns = svc["metadata"].get("namespace") or "default"
    spec = svc.get("spec") or {}
    selector = spec.get("selector")
    subsets = []
    matching = [p for p in pods if p["metadata"].get("namespace") == ns
                and label_selector_matches(selector, p["metadata"].get("labels"))
                and not is_terminating(p)
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                and (p.get("status") or {}).get("podIP")]
    matching.sort(key=lambda p: p["metadata"]["name"])
    for pod in matching:
        ports = []
        for sp in spec.get("ports") or []:
            target = sp.get("targetPort", sp.get("port"))
            port = pod_port(pod, target)
            if port is None:
                continue
            entry = {"port": port, "protocol": sp.get("protocol", "TCP")}
            if sp.get("name"):
                entry["name"] = sp["name"]
            ports.append(entry)
        if not ports:
            continue
        addr = {"ip": pod["status"]["podIP"], "nodeName": (pod.get("spec") or {}).get("nodeName"),
                "targetRef": {"kind": "Pod", "namespace": ns, "name": pod["metadata"]["name"],
                              "uid": pod["metadata"].get("uid")}}
        key = "addresses" if pod_is_ready(pod) else "notReadyAddresses"
        subsets.append({key: [addr], "ports": ports})
    return subsets


class EndpointsController(Controller):
    name = "endpoints"
    resources = ("services", "pods", "endpoints")

    def sync(self) -> None:
        pods = self.items("pods")
        existing = {f"{e['metadata'].get('namespace')}/{e['metadata']['name']}": e
                    for e in self.items("endpoints")}
        for svc in self.items("services"):
            spec = svc.get("spec") or {}
            if not spec.get("selector") or is_terminating(svc):
                continue
            md = svc["metadata"]
            ns = md.get("namespace") or "default"
            subsets = endpoints_for(svc, pods)
            cur = existing.get(f"{ns}/{md['name']}")
            try:
                if cur is None:
                    self.client.create("endpoints", ns, {
                        "apiVersion": "v1", "kind": "Endpoints",
                        "metadata": {"name": md["name"], "namespace": ns,
                                     "labels": md.get("labels") or {},
                                     "ownerReferences": [{**owner_ref(svc), "controller": False,
                                                          "blockOwnerDeletion": False}]},
                        "subsets": subsets})
                elif (cur.get("subsets") or []) != subsets:
                    self.client.patch("endpoints", ns, md["name"], {"subsets": subsets or None})
                if spec.get("type") == "LoadBalancer" and not (svc.get("status") or {}).get(
                        "loadBalancer", {}).get("ingress"):
                    self.client.patch_status("services", ns, md["name"], {
                        "loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}})
            except ApiError as exc:
                if exc.status != 409:
                    log.info("endpoints %s/%s: %s", ns, md["name"], exc)
            except requests.RequestException as exc:
                log.info("endpoints %s/%s: %s", ns, md["name"], exc)
