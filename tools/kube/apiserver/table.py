"""meta.k8s.io/v1 Table rendering (what `kubectl get` asks for with as=Table)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .resources import Resource

Obj = dict[str, Any]
Column = tuple[str, str, int, Callable[[Obj], Any]]  # name, type, priority, cell


def human_age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    try:
        t = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<unknown>"
    s = int((datetime.now(UTC) - t).total_seconds())
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    return f"{d}d{h % 24}h" if d < 8 and h % 24 else f"{d}d"


def _md(o: Obj) -> Obj:
    return o.get("metadata") or {}


def _spec(o: Obj) -> Obj:
    return o.get("spec") or {}


def _status(o: Obj) -> Obj:
    return o.get("status") or {}


def _pod_ready(o: Obj) -> str:
    cs = _status(o).get("containerStatuses") or []
    total = len(_spec(o).get("containers") or [])
    return f"{sum(1 for c in cs if c.get('ready'))}/{total}"


def _pod_status(o: Obj) -> str:
    if _md(o).get("deletionTimestamp"):
        return "Terminating"
    st = _status(o)
    for c in st.get("containerStatuses") or []:
        state = c.get("state") or {}
        if (state.get("waiting") or {}).get("reason"):
            return str(state["waiting"]["reason"])
        if (state.get("terminated") or {}).get("reason") and st.get("phase") != "Running":
            return str(state["terminated"]["reason"])
    return str(st.get("reason") or st.get("phase") or "Pending")


def _restarts(o: Obj) -> int:
    return sum(int(c.get("restartCount") or 0)
               for c in _status(o).get("containerStatuses") or [])


def _containers(o: Obj) -> list[Obj]:
    return list(((_spec(o).get("template") or {}).get("spec") or {}).get("containers") or [])


def _selector(o: Obj) -> str:
    sel = _spec(o).get("selector") or {}
    labels = sel.get("matchLabels", sel) if isinstance(sel, dict) else {}
    return ",".join(f"{k}={v}" for k, v in labels.items() if isinstance(v, str)) or "<none>"


def _ports(o: Obj) -> str:
    out = []
    for p in _spec(o).get("ports") or []:
        s = f"{p.get('port')}"
        if p.get("nodePort"):
            s += f":{p['nodePort']}"
        out.append(f"{s}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _job_status(o: Obj) -> str:
    for c in _status(o).get("conditions") or []:
        if c.get("status") == "True" and c.get("type") in ("Complete", "Failed", "Suspended"):
            return str(c["type"])
    return "Running"


def _hosts(o: Obj) -> str:
    hosts = [r.get("host") for r in _spec(o).get("rules") or [] if r.get("host")]
    return ",".join(hosts) or "*"


def _lb(o: Obj) -> str:
    ing = ((_status(o).get("loadBalancer") or {}).get("ingress")) or []
    return ",".join(i.get("ip") or i.get("hostname") or "" for i in ing)


AGE: Column = ("Age", "string", 0, lambda o: human_age(_md(o).get("creationTimestamp")))
COLUMNS: dict[str, list[Column]] = {
    "pods": [("Ready", "string", 0, _pod_ready), ("Status", "string", 0, _pod_status),
             ("Restarts", "string", 0, _restarts), AGE,
             ("IP", "string", 1, lambda o: _status(o).get("podIP") or "<none>"),
             ("Node", "string", 1, lambda o: _spec(o).get("nodeName") or "<none>")],
    "deployments": [
        ("Ready", "string", 0,
         lambda o: f"{_status(o).get('readyReplicas', 0)}/{_spec(o).get('replicas', 0)}"),
        ("Up-to-date", "integer", 0, lambda o: _status(o).get("updatedReplicas", 0)),
        ("Available", "integer", 0, lambda o: _status(o).get("availableReplicas", 0)), AGE,
        ("Containers", "string", 1, lambda o: ",".join(c.get("name", "") for c in _containers(o))),
        ("Images", "string", 1, lambda o: ",".join(c.get("image", "") for c in _containers(o))),
        ("Selector", "string", 1, _selector)],
    "replicasets": [("Desired", "integer", 0, lambda o: _spec(o).get("replicas", 0)),
                    ("Current", "integer", 0, lambda o: _status(o).get("replicas", 0)),
                    ("Ready", "integer", 0, lambda o: _status(o).get("readyReplicas", 0)), AGE],
    "services": [("Type", "string", 0, lambda o: _spec(o).get("type", "ClusterIP")),
                 ("Cluster-IP", "string", 0, lambda o: _spec(o).get("clusterIP") or "<none>"),
                 ("External-IP", "string", 0, lambda o: _lb(o) or "<none>"),
                 ("Port(s)", "string", 0, _ports), AGE,
                 ("Selector", "string", 1, _selector)],
    "jobs": [("Status", "string", 0, _job_status),
             ("Completions", "string", 0,
              lambda o: f"{_status(o).get('succeeded', 0)}/{_spec(o).get('completions', 1)}"),
             AGE],
    "namespaces": [("Status", "string", 0, lambda o: _status(o).get("phase", "")), AGE],
    "secrets": [("Type", "string", 0, lambda o: o.get("type", "")),
                ("Data", "integer", 0, lambda o: len(o.get("data") or {})), AGE],
    "configmaps": [("Data", "integer", 0,
                    lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})), AGE],
    "ingresses": [("Class", "string", 0, lambda o: _spec(o).get("ingressClassName") or "<none>"),
                  ("Hosts", "string", 0, _hosts), ("Address", "string", 0, _lb),
                  ("Ports", "string", 0, lambda o: "80, 443" if _spec(o).get("tls") else "80"),
                  AGE],
    "events": [("Type", "string", 0, lambda o: o.get("type", "")),
               ("Reason", "string", 0, lambda o: o.get("reason", "")),
               ("Object", "string", 0, lambda o: "{}/{}".format(
                   (o.get("involvedObject") or {}).get("kind", "").lower(),
                   (o.get("involvedObject") or {}).get("name", ""))),
               ("Message", "string", 0, lambda o: o.get("message", "")), AGE],
}


def to_table(res: Resource, items: list[Obj], rv: str, include_object: str = "") -> Obj:
    cols: list[Column] = [("Name", "string", 0, lambda o: _md(o).get("name", "")),
                          *COLUMNS.get(res.plural, [AGE])]
    defs = [{"name": n, "type": t, "format": "name" if n == "Name" else "",
             "description": n, "priority": p} for n, t, p, _ in cols]
    rows = []
    for o in items:
        row: Obj = {"cells": [f(o) for _, _, _, f in cols]}
        if include_object == "None":
            pass
        elif include_object == "Object":
            row["object"] = o
        else:
            md = dict(_md(o))
            md.pop("managedFields", None)
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": md}
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
            "columnDefinitions": defs, "rows": rows}
