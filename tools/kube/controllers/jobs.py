"""Job controller: pods, succeeded/failed counts, Complete/Failed conditions, deadlines, TTL."""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

import requests

from .base import Controller, Expectations, random_suffix
from .client import ApiError, Obj, is_owned_by, is_terminating, now_iso, owner_ref, parse_time
from .deployments import failed_create

log = logging.getLogger(__name__)


class JobController(Controller):
    name = "jobs"
    resources = ("jobs", "pods")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.expectations = Expectations()
        self.next_create: dict[str, float] = {}
        self.create_failures: dict[str, int] = {}

    def sync(self) -> None:
        pods = self.items("pods")
        now = time.time()
        for job in self.items("jobs"):
            if is_terminating(job):
                continue
            try:
                self.sync_one(job, pods, now)
            except (ApiError, requests.RequestException) as exc:
                log.info("job %s: %s", job["metadata"]["name"], exc)

    def sync_one(self, job: Obj, pods: list[Obj], now: float) -> None:
        md = job["metadata"]
        ns = md.get("namespace") or "default"
        name = md["name"]
        spec = job.get("spec") or {}
        status = dict(job.get("status") or {})
        conds = status.get("conditions") or []
        finished = next((c for c in conds if c.get("type") in ("Complete", "Failed")
                         and c.get("status") == "True"), None)
        if finished:
            ttl = spec.get("ttlSecondsAfterFinished")
            done_at = parse_time(status.get("completionTime") or finished.get(
                "lastTransitionTime"))
            if ttl is not None and done_at is not None and now - done_at >= float(ttl):
                self.client.delete("jobs", ns, name, propagation="Background")
            return
        owned = [p for p in pods if p["metadata"].get("namespace") == ns and is_owned_by(p, job)]
        key = f"{ns}/{name}"
        if not self.expectations.satisfied(key, {p["metadata"]["name"] for p in owned}):
            return
        phase = lambda p: (p.get("status") or {}).get("phase")  # noqa: E731
        active = [p for p in owned if phase(p) not in ("Succeeded", "Failed")
                  and not is_terminating(p)]
        succeeded = sum(1 for p in owned if phase(p) == "Succeeded")
        failed = sum(1 for p in owned if phase(p) == "Failed")
        restarts = 0
        if (spec.get("template") or {}).get("spec", {}).get("restartPolicy") == "OnFailure":
            restarts = sum(int(cs.get("restartCount", 0)) for p in owned
                           for cs in (p.get("status") or {}).get("containerStatuses") or [])
        completions = spec.get("completions")
        want = 1 if completions is None else int(completions)
        parallelism = int(spec.get("parallelism", 1) if spec.get("parallelism") is not None
                          else 1)
        backoff_limit = int(spec.get("backoffLimit", 6) if spec.get("backoffLimit") is not None
                            else 6)
        ts = now_iso()
        start_time = status.get("startTime")
        if not start_time and not spec.get("suspend"):
            start_time = ts
        new_status: Obj = {"startTime": start_time, "active": len(active),
                           "succeeded": succeeded, "failed": failed,
                           "ready": sum(1 for p in active if _ready(p)),
                           "terminating": 0}
        fail_reason = fail_msg = None
        if failed + restarts > backoff_limit:
            fail_reason, fail_msg = ("BackoffLimitExceeded",
                                     "Job has reached the specified backoff limit")
        deadline = spec.get("activeDeadlineSeconds")
        started = parse_time(start_time)
        if deadline is not None and started is not None and now - started >= float(deadline):
            fail_reason, fail_msg = ("DeadlineExceeded",
                                     "Job was active longer than specified deadline")
        if fail_reason:
            for p in active:
                self.client.delete("pods", ns, p["metadata"]["name"])
            new_status["active"] = 0
            new_status["ready"] = 0
            new_status["conditions"] = [
                *conds, _cond("FailureTarget", fail_reason, fail_msg or "", ts),
                _cond("Failed", fail_reason, fail_msg or "", ts)]
            self.client.event(job, fail_reason, fail_msg or "", "Warning",
                              component="job-controller")
            self.client.patch_status("jobs", ns, name, new_status)
            return
        if succeeded >= want:
            for p in active:
                self.client.delete("pods", ns, p["metadata"]["name"])
            new_status["active"] = 0
            new_status["completionTime"] = ts
            done_msg = "Reached expected number of succeeded pods"
            new_status["conditions"] = [
                *conds, _cond("SuccessCriteriaMet", "CompletionsReached", done_msg, ts),
                _cond("Complete", "CompletionsReached", done_msg, ts)]
            self.client.event(job, "Completed", "Job completed", component="job-controller")
            self.client.patch_status("jobs", ns, name, new_status)
            return
        if not spec.get("suspend"):
            missing = min(parallelism - len(active), want - succeeded - len(active))
            if missing > 0 and now >= self.next_create.get(key, 0):
                created = set()
                try:
                    for _ in range(missing):
                        created.add(self.create_pod(job, ns))
                except ApiError as exc:  # e.g. refused by PodSecurity admission
                    failed_create(self.client, job, exc, "job-controller")
                    self.create_failures[key] = self.create_failures.get(key, 0) + 1
                else:
                    self.create_failures.pop(key, None)
                self.expectations.expect(key, created=created)
                # exponential back-off between re-creations of failed pods
                self.next_create[key] = now + max(
                    min(30.0, 2 ** failed) if failed else 0,
                    min(60.0, 2 ** self.create_failures.get(key, -10)))
                new_status["active"] = len(active) + len(created)
        old = job.get("status") or {}
        if any(old.get(k) != v for k, v in new_status.items() if k != "terminating"):
            self.client.patch_status("jobs", ns, name, new_status)

    def create_pod(self, job: Obj, ns: str) -> str:
        tpl = copy.deepcopy((job.get("spec") or {}).get("template") or {})
        meta = tpl.get("metadata") or {}
        jname = job["metadata"]["name"]
        uid = job["metadata"].get("uid", "")
        labels = {**(meta.get("labels") or {}), "job-name": jname,
                  "batch.kubernetes.io/job-name": jname, "controller-uid": uid,
                  "batch.kubernetes.io/controller-uid": uid}
        name = f"{jname}-{random_suffix()}"
        pod_spec: Obj = tpl.get("spec") or {}
        pod_spec.setdefault("restartPolicy", "Never")
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels,
                         "annotations": meta.get("annotations") or {},
                         "ownerReferences": [owner_ref(job)]},
            "spec": pod_spec,
        }
        self.client.create("pods", ns, pod)
        self.client.event(job, "SuccessfulCreate", f"Created pod: {name}",
                          component="job-controller")
        return name


def _ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _cond(ctype: str, reason: str, message: str, ts: str) -> Obj:
    return {"type": ctype, "status": "True", "reason": reason, "message": message,
            "lastProbeTime": ts, "lastTransitionTime": ts}
