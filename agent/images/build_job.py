"""Running an image build Job: create or adopt it, wait for it, explain how it failed.

The Job's name is derived from its destination (`kaniko.job_name`), so a build
that is already running (after an agent restart, a re-delivered action) is
adopted, not started twice. A Job that already failed, or that pushes
elsewhere, is deleted and created again, so a retry after fixing credentials
does not wait for the old Job's TTL. A failure message carries the Job's
reason, the containers' exit reasons, a hint, and the log tail with anything
that looks like a secret masked and every URI redacted (user info, signed
query strings). A pod the API server refuses (Pod Security admission: the
Kaniko executor runs as root) fails the build at once, from the Job's
FailedCreate event, instead of waiting for the Job's deadline.

The build's Secret (the model URI) is applied right before the Job is created
and then owned by the Job: a replaced Job's garbage collection cannot take
the new Job's Secret with it.
"""

from __future__ import annotations

import builtins
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from agent.errors import BuildError
from agent.images.naming import parse_reference
from agent.logs import redact_uris_in

log = logging.getLogger(__name__)

_SECRETS = re.compile(r"(?i)(authorization|password|token|secret)([\"']?\s*[:=]\s*)\S+")


class KubeLike(Protocol):
    """What the runner needs of `agent.plugins.kubernetes.client.KubeClient`."""

    def create(self, obj: Mapping[str, Any], *, namespace: str | None = None,
               exist_ok: bool = False) -> dict[str, Any]: ...

    def get(self, api_version: str, kind: str, name: str,
            namespace: str | None = None) -> dict[str, Any] | None: ...

    def list(self, api_version: str, kind: str, namespace: str | None = None, *,
             label_selector: str | None = None,
             field_selector: str | None = None) -> list[dict[str, Any]]: ...

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None,
               *, propagation: str = "Background") -> bool: ...

    def pod_logs(self, name: str, namespace: str | None = None, *,
                 container: str | None = None, tail_lines: int | None = None) -> str: ...

    def apply(self, obj: Mapping[str, Any], *, namespace: str | None = None,
              field_manager: str = ..., force: bool = True) -> dict[str, Any]: ...

    def events_for(self, kind: str, name: str,
                   namespace: str | None = None) -> builtins.list[dict[str, Any]]: ...


def _scrub(text: str) -> str:
    text = redact_uris_in(text)
    return _SECRETS.sub(lambda m: f"{m.group(1)}{m.group(2)}**********", text)


def _condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def _job_pods(kube: KubeLike, job: Mapping[str, Any], namespace: str) -> list[dict[str, Any]]:
    """Pods of this Job: the `job-name` label, minus pods owned by an earlier Job of that name
    (a replaced Job's pods may linger while the garbage collector removes them)."""
    meta = job.get("metadata") or {}
    uid = meta.get("uid")
    pods = kube.list("v1", "Pod", namespace, label_selector=f"job-name={meta['name']}")
    if not uid:
        return pods
    return [pod for pod in pods
            if not (owners := (pod.get("metadata") or {}).get("ownerReferences"))
            or any(owner.get("uid") == uid for owner in owners)]


def _failure_message(kube: KubeLike, job: Mapping[str, Any], namespace: str, destination: str,
                     tail_lines: int) -> str:
    """Why the Job failed: the Job's reason, container reasons, and the executor log tail."""
    name = job["metadata"]["name"]
    failed = _condition(job, "Failed") or {}
    reasons = [str(failed.get("reason") or "failed")]
    tail, container = "", "kaniko"
    pods = _job_pods(kube, job, namespace)
    for pod in pods[-1:]:
        status = pod.get("status") or {}
        for kind, statuses in (("init", status.get("initContainerStatuses") or []),
                               ("main", status.get("containerStatuses") or [])):
            for item in statuses:
                state = (item.get("state") or {}).get("terminated") or {}
                if state and state.get("exitCode", 0) != 0:
                    reasons.append(f"{item.get('name')}: {state.get('reason', 'Error')} "
                                   f"(exit {state.get('exitCode')})")
                    if kind == "init":
                        container = str(item.get("name"))
        try:
            tail = kube.pod_logs(pod["metadata"]["name"], namespace, container=container,
                                 tail_lines=tail_lines)
        except Exception as exc:
            tail = f"(no log: {type(exc).__name__})"
    hint = ""
    lowered = tail.lower()
    if "oomkilled" in " ".join(reasons).lower():
        hint = " Raise images.kaniko.resources.limits.memory."
    elif "deadlineexceeded" in " ".join(reasons).lower():
        hint = " Raise images.kaniko.timeout_seconds."
    elif any(word in lowered for word in ("unauthorized", "401", "authentication required",
                                          "denied")):
        registry = parse_reference(destination).registry
        hint = (f" The builder could not authenticate to {registry}: check "
                "images.kaniko.secret_name / config_map / service_account.")
    return (f"image build job {namespace}/{name} for {destination} failed: "
            f"{'; '.join(reasons)}.{hint}\n--- {container} log (tail) ---\n{_scrub(tail)}")


def _destination(job: Mapping[str, Any]) -> str | None:
    """The `--destination` of a (rendered or live) build Job, None when it has none."""
    try:
        args = job["spec"]["template"]["spec"]["containers"][0].get("args") or []
    except (KeyError, IndexError, TypeError):
        return None
    return next((str(a).split("=", 1)[1] for a in args
                 if str(a).startswith("--destination=")), None)


def _create(kube: KubeLike, job: dict[str, Any], secret: Mapping[str, Any] | None
            ) -> dict[str, Any]:
    """Create (or find) the Job; its Secret first, then owned by the Job that exists."""
    namespace = job["metadata"]["namespace"]
    if secret is not None:
        kube.apply(secret)  # without an owner: a dying earlier Job cannot collect it
    try:
        live = kube.create(job, namespace=namespace, exist_ok=True)
    except Exception:
        if secret is not None:  # nothing owns it: do not leave the URI behind
            kube.delete("v1", "Secret", secret["metadata"]["name"], namespace)
        raise
    uid = (live.get("metadata") or {}).get("uid")
    if secret is not None and uid:
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"],
                 "uid": uid}
        kube.apply({**secret, "metadata": {**secret["metadata"], "ownerReferences": [owner]}})
    return live


def _replace_job(kube: KubeLike, job: dict[str, Any], why: str, report: Callable[..., None],
                 poll_interval: float, delete_timeout: float,
                 sleep: Callable[[float], None], clock: Callable[[], float],
                 secret: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Delete the existing Job of this name, wait (bounded) until it is gone, create `job`."""
    namespace = job["metadata"]["namespace"]
    name = job["metadata"]["name"]
    log.info("replacing image build job %s/%s: %s", namespace, name, why)
    report(f"image build job {name} {why}: deleting it to build again", job=name)
    kube.delete("batch/v1", "Job", name, namespace, propagation="Background")
    deadline = clock() + delete_timeout
    while kube.get("batch/v1", "Job", name, namespace) is not None:
        if clock() > deadline:
            raise BuildError(f"image build job {namespace}/{name} ({why}) was deleted but is "
                             f"still there after {delete_timeout:.0f}s (finalizers?); "
                             "retry later or delete it by hand")
        sleep(min(poll_interval, 1.0))
    return _create(kube, job, secret)


def run_build_job(kube: KubeLike, job: dict[str, Any], report: Callable[..., None],
                  poll_interval: float = 3.0, tail_lines: int = 40,
                  sleep: Callable[[float], None] = time.sleep,
                  clock: Callable[[], float] = time.monotonic,
                  delete_timeout: float = 60.0,
                  secret: Mapping[str, Any] | None = None) -> str:
    """Create (or adopt) the Job, wait for it; return the pushed digest ('' if unknown).

    A running or completed Job of the same name and destination is adopted; one
    that failed, or that pushes elsewhere, is deleted and created again.
    `secret`: the build's Secret (`kaniko.build_secret`), applied with the Job.
    """
    namespace = job["metadata"]["namespace"]
    name = job["metadata"]["name"]
    destination = _destination(job)
    if destination is None:
        raise BuildError(f"image build job {namespace}/{name} has no --destination")
    existing = _create(kube, job, secret)
    if _condition(existing, "Failed"):
        _replace_job(kube, job, "failed before", report, poll_interval, delete_timeout,
                     sleep, clock, secret)
    elif _destination(existing) not in (None, destination):
        _replace_job(kube, job, f"was made for {_destination(existing)}", report,
                     poll_interval, delete_timeout, sleep, clock, secret)
    report(f"image build job {name} started", job=name, image=destination)
    deadline = clock() + float(job["spec"].get("activeDeadlineSeconds") or 3600) + 120
    while True:
        live = kube.get("batch/v1", "Job", name, namespace)
        if live is None:
            raise BuildError(f"image build job {namespace}/{name} disappeared while running")
        if _condition(live, "Complete") or (live.get("status") or {}).get("succeeded"):
            return _pushed_digest(kube, live, namespace)
        if _condition(live, "Failed"):
            raise BuildError(_failure_message(kube, live, namespace, destination, tail_lines))
        refused = _pod_refused(kube, live, namespace)
        if refused:
            kube.delete("batch/v1", "Job", name, namespace, propagation="Background")
            raise BuildError(refused)
        if clock() > deadline:
            raise BuildError(f"image build job {namespace}/{name} did not finish in time "
                             "(DeadlineExceeded): raise images.kaniko.timeout_seconds")
        sleep(poll_interval)


def _pod_refused(kube: KubeLike, job: Mapping[str, Any], namespace: str) -> str | None:
    """Why the API server refuses the Job's pod (Pod Security admission), None otherwise.

    The Job controller keeps retrying a refused pod until the Job's deadline and sets no
    condition: only its FailedCreate events say so. Other FailedCreate causes (a quota,
    a service account not there yet) may pass: the Job is left to retry them.
    """
    status = job.get("status") or {}
    if status.get("active") or status.get("succeeded") or status.get("failed"):
        return None
    meta = job.get("metadata") or {}
    for event in reversed(kube.events_for("Job", meta["name"], namespace)):
        involved = event.get("involvedObject") or {}
        message = str(event.get("message") or "")
        if (event.get("reason") != "FailedCreate" or involved.get("uid") not in
                (None, meta.get("uid")) or "violates PodSecurity" not in message):
            continue
        return (f"image build job {namespace}/{meta['name']}: the API server refuses its pod "
                f"({message}). The namespace enforces a Pod Security level that forbids the "
                "Kaniko executor, which must run as root: use the direct builder "
                "(images.builder: direct, no pod), or run Kaniko builds in a namespace "
                "labelled pod-security.kubernetes.io/enforce: baseline "
                "(images.kaniko.namespace)")
    return None


def _pushed_digest(kube: KubeLike, job: Mapping[str, Any], namespace: str) -> str:
    for pod in _job_pods(kube, job, namespace):
        for item in (pod.get("status") or {}).get("containerStatuses") or []:
            message = ((item.get("state") or {}).get("terminated") or {}).get("message") or ""
            if item.get("name") == "kaniko" and message.strip().startswith("sha256:"):
                return message.strip()
    return ""
