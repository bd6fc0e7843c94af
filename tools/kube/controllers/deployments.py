"""Deployment -> ReplicaSet -> Pod controllers with real rollout status."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from typing import Any

import requests

from .base import Controller, Expectations, random_suffix
from .client import (
    ApiError,
    Obj,
    is_owned_by,
    is_terminating,
    now_iso,
    owner_ref,
    parse_time,
    pod_is_ready,
)

log = logging.getLogger(__name__)

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def normalized(template: Obj) -> Obj:
    """The template without the hash label and server-added empty fields."""
    tpl = copy.deepcopy(template)
    meta = tpl.setdefault("metadata", {})
    meta.pop("creationTimestamp", None)
    labels = meta.get("labels") or {}
    labels.pop(HASH_LABEL, None)
    for k in [k for k, v in meta.items() if v in (None, {}, [])]:
        del meta[k]
    return tpl


def template_hash(template: Obj) -> str:
    tpl = normalized(template)
    digest = hashlib.sha256(json.dumps(tpl, sort_keys=True).encode()).digest()
    return "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:10])


def resolve_percent(value: Any, total: int, round_up: bool) -> int:
    if value is None:
        value = "25%"
    if isinstance(value, str) and value.endswith("%"):
        raw = float(value[:-1]) * total / 100
        return math.ceil(raw) if round_up else math.floor(raw)
    return int(value)


def pod_available(pod: Obj, min_ready: int, now: float) -> bool:
    if not pod_is_ready(pod):
        return False
    if min_ready <= 0:
        return True
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            since = parse_time(c.get("lastTransitionTime"))
            return since is not None and now - since >= min_ready
    return False


def active_pod(pod: Obj) -> bool:
    return not is_terminating(pod) and \
        (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def failed_create(client: Any, owner: Obj, exc: ApiError, component: str) -> str:
    """The controllers' FailedCreate event (``Error creating: <API error>``); the error."""
    message = str(exc).split(": ", 1)[-1]
    client.event(owner, "FailedCreate", f"Error creating: {message}", "Warning",
                 component=component)
    return message


class ReplicaSetController(Controller):
    name = "replicasets"
    resources = ("replicasets", "pods")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.expectations = Expectations()
        self.create_backoff: dict[str, tuple[float, int]] = {}  # key -> (retry at, failures)

    def sync(self) -> None:
        now = time.time()
        pods = self.items("pods")
        for rs in self.items("replicasets"):
            try:
                self.sync_one(rs, pods, now)
            except (ApiError, requests.RequestException) as exc:
                log.info("replicaset %s: %s", rs["metadata"]["name"], exc)

    def sync_one(self, rs: Obj, pods: list[Obj], now: float) -> None:
        md = rs["metadata"]
        ns = md.get("namespace") or "default"
        spec = rs.get("spec") or {}
        owned = [p for p in pods if p["metadata"].get("namespace") == ns and is_owned_by(p, rs)]
        names = {p["metadata"]["name"] for p in owned}
        key = f"{ns}/{md['name']}"
        if not self.expectations.satisfied(key, names):
            return
        active = [p for p in owned if active_pod(p)]
        want = int(spec.get("replicas", 1))
        if is_terminating(rs):
            want = 0
        diff = want - len(active)
        failure = None
        if diff > 0 and time.monotonic() >= self.create_backoff.get(key, (0.0, 0))[0]:
            created: set[str] = set()
            try:
                for _ in range(min(diff, 50)):
                    created.add(self.create_pod(rs, ns))
                self.create_backoff.pop(key, None)
            except ApiError as exc:  # e.g. refused by PodSecurity admission
                failure = failed_create(self.client, rs, exc, "replicaset-controller")
                tries = self.create_backoff.get(key, (0.0, 0))[1] + 1
                self.create_backoff[key] = (time.monotonic() + min(60, 2 ** tries), tries)
            self.expectations.expect(key, created=created)
        elif diff < 0:
            # delete not-ready / unscheduled / newest first
            victims = sorted(active, key=lambda p: (
                pod_is_ready(p), bool((p.get("spec") or {}).get("nodeName")),
                -(parse_time(p["metadata"].get("creationTimestamp")) or 0)))[:-diff]
            deleted = set()
            for p in victims:
                if self.client.delete("pods", ns, p["metadata"]["name"],
                                      uid=p["metadata"].get("uid")):
                    deleted.add(p["metadata"]["name"])
            self.expectations.expect(key, deleted=deleted)
        min_ready = int(spec.get("minReadySeconds", 0))
        status = {
            "replicas": len(active),
            "fullyLabeledReplicas": len(active),
            "readyReplicas": sum(1 for p in active if pod_is_ready(p)),
            "availableReplicas": sum(1 for p in active if pod_available(p, min_ready, now)),
            "observedGeneration": md.get("generation", 1),
        }
        old = rs.get("status") or {}
        if failure:
            status["conditions"] = [{"type": "ReplicaFailure", "status": "True",
                                     "reason": "FailedCreate", "message": failure,
                                     "lastTransitionTime": now_iso()}]
        elif old.get("conditions") and key not in self.create_backoff:
            status["conditions"] = None
        if any(old.get(k, 0) != v for k, v in status.items()):
            self.client.patch_status("replicasets", ns, md["name"], status)

    def create_pod(self, rs: Obj, ns: str) -> str:
        tpl = copy.deepcopy((rs.get("spec") or {}).get("template") or {})
        meta = tpl.get("metadata") or {}
        name = f"{rs['metadata']['name']}-{random_suffix()}"
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": meta.get("labels") or {},
                         "annotations": meta.get("annotations") or {},
                         "ownerReferences": [owner_ref(rs)]},
            "spec": tpl.get("spec") or {},
        }
        self.client.create("pods", ns, pod)
        return name


class DeploymentController(Controller):
    name = "deployments"
    resources = ("deployments", "replicasets", "pods")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.expectations = Expectations()
        self.progress: dict[str, tuple[str, str]] = {}  # uid -> (fingerprint, time)

    def sync(self) -> None:
        now = time.time()
        rss = self.items("replicasets")
        pods = self.items("pods")
        for dep in self.items("deployments"):
            if is_terminating(dep):
                continue
            try:
                self.sync_one(dep, rss, pods, now)
            except (ApiError, requests.RequestException) as exc:
                log.info("deployment %s: %s", dep["metadata"]["name"], exc)

    def sync_one(self, dep: Obj, all_rs: list[Obj], pods: list[Obj], now: float) -> None:
        md = dep["metadata"]
        ns = md.get("namespace") or "default"
        name = md["name"]
        spec = dep.get("spec") or {}
        desired = int(spec.get("replicas", 1))
        template = spec.get("template") or {}
        h = template_hash(template)
        owned = [rs for rs in all_rs if rs["metadata"].get("namespace") == ns and
                 is_owned_by(rs, dep) and not is_terminating(rs)]
        key = f"{ns}/{name}"
        if not self.expectations.satisfied(key, {rs["metadata"]["name"] for rs in owned}):
            return
        wanted = normalized(template)
        new = next((rs for rs in owned
                    if (rs["metadata"].get("labels") or {}).get(HASH_LABEL) == h), None) or \
            next((rs for rs in owned
                  if normalized((rs.get("spec") or {}).get("template") or {}) == wanted), None)
        olds = [rs for rs in owned if rs is not new]
        revisions = [int((rs["metadata"].get("annotations") or {}).get(REVISION, "0") or 0)
                     for rs in owned]
        max_rev = max(revisions, default=0)
        strategy = spec.get("strategy") or {}
        rolling = strategy.get("type", "RollingUpdate") != "Recreate"
        ru = strategy.get("rollingUpdate") or {}
        surge = resolve_percent(ru.get("maxSurge"), desired, True) if rolling else 0
        unavailable = resolve_percent(ru.get("maxUnavailable"), desired, False) if rolling \
            else desired
        if rolling and surge == 0 and unavailable == 0:
            unavailable = 1
        paused = bool(spec.get("paused"))

        if new is None and not paused:
            new = self.create_rs(dep, ns, h, template, max_rev + 1,
                                 0 if (olds and any(self.rs_replicas(o) for o in olds))
                                 else desired)
            self.expectations.expect(key, created={new["metadata"]["name"]})
            self.client.event(dep, "ScalingReplicaSet",
                              f"Scaled up replica set {new['metadata']['name']} from 0 to "
                              f"{new['spec']['replicas']}", component="deployment-controller")
            return
        if new is not None:
            rev = int((new["metadata"].get("annotations") or {}).get(REVISION, "0") or 0)
            if rev < max_rev:
                self.client.patch("replicasets", ns, new["metadata"]["name"], {
                    "metadata": {"annotations": {REVISION: str(max_rev + 1)}}})

        if not paused and new is not None:
            if rolling:
                self.roll(dep, ns, new, olds, desired, surge, unavailable)
            else:
                self.recreate(dep, ns, new, olds, desired, pods)
            self.cleanup(dep, ns, olds, int(spec.get("revisionHistoryLimit", 10)))
        self.write_status(dep, ns, new, olds, desired, unavailable, paused, now)

    @staticmethod
    def rs_replicas(rs: Obj) -> int:
        return int((rs.get("spec") or {}).get("replicas", 0))

    @staticmethod
    def rs_status(rs: Obj, field: str) -> int:
        return int((rs.get("status") or {}).get(field, 0) or 0)

    def scale(self, dep: Obj, ns: str, rs: Obj, replicas: int) -> None:
        old = self.rs_replicas(rs)
        if old == replicas:
            return
        self.client.patch("replicasets", ns, rs["metadata"]["name"], {
            "metadata": {"annotations": {
                "deployment.kubernetes.io/desired-replicas": str(
                    (dep.get("spec") or {}).get("replicas", 1))}},
            "spec": {"replicas": replicas}})
        rs.setdefault("spec", {})["replicas"] = replicas
        verb = "up" if replicas > old else "down"
        self.client.event(dep, "ScalingReplicaSet",
                          f"Scaled {verb} replica set {rs['metadata']['name']} from {old} to "
                          f"{replicas}", component="deployment-controller")

    def roll(self, dep: Obj, ns: str, new: Obj, olds: list[Obj], desired: int, surge: int,
             unavailable: int) -> None:
        total = self.rs_replicas(new) + sum(self.rs_replicas(o) for o in olds)
        if not any(self.rs_replicas(o) for o in olds):
            self.scale(dep, ns, new, desired)
            return
        # scale up the new replica set within maxSurge
        allowed = desired + surge
        if self.rs_replicas(new) < desired and total < allowed:
            self.scale(dep, ns, new, min(desired, self.rs_replicas(new) + allowed - total))
        elif self.rs_replicas(new) > desired:
            self.scale(dep, ns, new, desired)
        # scale down old ones: unhealthy old pods first, then within maxUnavailable
        def avail(rs: Obj) -> int:
            return min(self.rs_replicas(rs), self.rs_status(rs, "availableReplicas"))

        min_available = desired - unavailable
        all_count = self.rs_replicas(new) + sum(self.rs_replicas(o) for o in olds)
        new_unavailable = max(0, self.rs_replicas(new) - avail(new))
        max_down = all_count - min_available - new_unavailable
        if max_down <= 0:
            return
        oldest_first = sorted(olds, key=lambda r: r["metadata"].get("creationTimestamp", ""))
        for old in oldest_first:
            cur = self.rs_replicas(old)
            unhealthy = cur - avail(old)
            if max_down <= 0 or unhealthy <= 0:
                continue
            cut = min(max_down, unhealthy)
            self.scale(dep, ns, old, cur - cut)
            max_down -= cut
        down = avail(new) + sum(avail(o) for o in olds) - min_available
        for old in oldest_first:
            cur = self.rs_replicas(old)
            if down <= 0 or cur == 0:
                continue
            cut = min(cur, down)
            self.scale(dep, ns, old, cur - cut)
            down -= cut

    def recreate(self, dep: Obj, ns: str, new: Obj, olds: list[Obj], desired: int,
                 pods: list[Obj]) -> None:
        for old in olds:
            self.scale(dep, ns, old, 0)
        old_pods = [p for p in pods if any(is_owned_by(p, o) for o in olds)]
        if not old_pods:
            self.scale(dep, ns, new, desired)

    def cleanup(self, dep: Obj, ns: str, olds: list[Obj], limit: int) -> None:
        idle = [o for o in olds if self.rs_replicas(o) == 0 and self.rs_status(o, "replicas") == 0]
        idle.sort(key=lambda r: int((r["metadata"].get("annotations") or {}).get(REVISION, 0)))
        for rs in idle[:max(0, len(idle) - limit)]:
            self.client.delete("replicasets", ns, rs["metadata"]["name"])

    def create_rs(self, dep: Obj, ns: str, h: str, template: Obj, revision: int,
                  replicas: int) -> Obj:
        tpl = copy.deepcopy(template)
        tpl.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = h
        spec = dep.get("spec") or {}
        selector = copy.deepcopy(spec.get("selector") or {
            "matchLabels": dict((template.get("metadata") or {}).get("labels") or {})})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = h
        rs: Obj = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": f"{dep['metadata']['name']}-{h}", "namespace": ns,
                "labels": {**((template.get("metadata") or {}).get("labels") or {}),
                           HASH_LABEL: h},
                "annotations": {REVISION: str(revision),
                                "deployment.kubernetes.io/desired-replicas": str(
                                    spec.get("replicas", 1)),
                                "deployment.kubernetes.io/max-replicas": str(
                                    spec.get("replicas", 1) + 1)},
                "ownerReferences": [owner_ref(dep)],
            },
            "spec": {"replicas": replicas, "selector": selector, "template": tpl,
                     "minReadySeconds": spec.get("minReadySeconds", 0)},
        }
        try:
            created = self.client.create("replicasets", ns, rs)
        except ApiError as exc:
            if exc.status != 409:
                raise
            created = self.client.get("replicasets", ns, rs["metadata"]["name"]) or rs
        created.setdefault("kind", "ReplicaSet")
        created.setdefault("apiVersion", "apps/v1")
        return created

    def write_status(self, dep: Obj, ns: str, new: Obj | None, olds: list[Obj], desired: int,
                     unavailable: int, paused: bool, now: float) -> None:
        md = dep["metadata"]
        spec = dep.get("spec") or {}
        all_rs = ([new] if new else []) + olds
        replicas = sum(self.rs_status(r, "replicas") for r in all_rs)
        updated = self.rs_status(new, "replicas") if new else 0
        ready = sum(self.rs_status(r, "readyReplicas") for r in all_rs)
        available = sum(self.rs_status(r, "availableReplicas") for r in all_rs)
        old_status = dep.get("status") or {}
        old_conds = {c.get("type"): c for c in old_status.get("conditions") or []}
        ts = now_iso()

        def cond(ctype: str, status: str, reason: str, message: str,
                 progressed: bool = False) -> Obj:
            prev = old_conds.get(ctype) or {}
            same = prev.get("status") == status
            changed = same and prev.get("reason") == reason
            return {"type": ctype, "status": status, "reason": reason, "message": message,
                    "lastTransitionTime": prev.get("lastTransitionTime", ts) if same else ts,
                    "lastUpdateTime": ts if (progressed or not changed) else
                    prev.get("lastUpdateTime", ts)}

        is_available = available >= desired - unavailable
        conds = [cond("Available", "True" if is_available else "False",
                      "MinimumReplicasAvailable" if is_available else "MinimumReplicasUnavailable",
                      "Deployment has minimum availability." if is_available else
                      "Deployment does not have minimum availability.")]
        new_name = new["metadata"]["name"] if new else ""
        complete = new is not None and updated == desired and replicas == desired and \
            self.rs_status(new, "availableReplicas") == desired and \
            not any(self.rs_status(o, "replicas") for o in olds)
        fingerprint = json.dumps([new_name, updated, ready, available, replicas,
                                  [self.rs_replicas(r) for r in all_rs]])
        uid = md.get("uid", md["name"])
        prev_fp = self.progress.get(uid)
        progressed = prev_fp is None or prev_fp[0] != fingerprint
        if progressed:
            self.progress[uid] = (fingerprint, ts)
        last_progress = parse_time(self.progress[uid][1]) or now
        prev_prog = old_conds.get("Progressing") or {}
        deadline = spec.get("progressDeadlineSeconds", 600)
        if paused:
            prog = cond("Progressing", "Unknown", "DeploymentPaused",
                        "Deployment is paused")
        elif complete:
            prog = cond("Progressing", "True", "NewReplicaSetAvailable",
                        f'ReplicaSet "{new_name}" has successfully progressed.')
        elif prev_prog.get("reason") == "ProgressDeadlineExceeded" and not progressed:
            prog = cond("Progressing", "False", "ProgressDeadlineExceeded",
                        f'ReplicaSet "{new_name}" has timed out progressing.')
        elif deadline is not None and now - last_progress > float(deadline):
            prog = cond("Progressing", "False", "ProgressDeadlineExceeded",
                        f'ReplicaSet "{new_name}" has timed out progressing.')
            self.client.event(dep, "ProgressDeadlineExceeded",
                              f'ReplicaSet "{new_name}" has timed out progressing.', "Warning",
                              component="deployment-controller")
        else:
            reason = "ReplicaSetUpdated" if prev_prog else "NewReplicaSetCreated"
            prog = cond("Progressing", "True", reason,
                        f'ReplicaSet "{new_name}" is progressing.', progressed=progressed)
        conds.append(prog)
        # the new ReplicaSet's ReplicaFailure (pods refused at create) is copied over
        failure = next((c for c in ((new or {}).get("status") or {}).get("conditions") or []
                        if c.get("type") == "ReplicaFailure"), None)
        if failure:
            conds.append(cond("ReplicaFailure", failure.get("status", "True"),
                              failure.get("reason", ""), failure.get("message", "")))
        status: Obj = {
            "observedGeneration": md.get("generation", 1),
            "replicas": replicas, "updatedReplicas": updated, "readyReplicas": ready,
            "availableReplicas": available,
            "unavailableReplicas": max(0, max(desired, replicas) - available),
            "conditions": conds,
        }
        if new and (new.get("status") or {}).get("replicas") is not None:
            status["collisionCount"] = old_status.get("collisionCount", 0)
        comparable = {k: v for k, v in status.items() if k != "conditions"}
        old_cmp = {k: old_status.get(k, 0) for k in comparable}
        old_c = [(c.get("type"), c.get("status"), c.get("reason"))
                 for c in old_status.get("conditions") or []]
        new_c = [(c["type"], c["status"], c["reason"]) for c in conds]
        if comparable != old_cmp or old_c != new_c:
            self.client.patch_status("deployments", ns, md["name"], status)

