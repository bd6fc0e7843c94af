"""Applying rendered objects, waiting for rollouts and explaining failures.

Every object goes through server-side apply with the agent's field manager,
so applying the same rendering twice changes nothing (no new generation).
A rollout is done when the Deployment controller has observed the newest
generation and every replica is updated and available, with no old replica
left. When it is not done in time, or new pods sit in ImagePullBackOff /
CrashLoopBackOff for longer than `fail_fast_seconds`, the pods' container
states, their last log lines and the events say why, in plain words.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agent.plugins.kubernetes.client import KubeClient
from agent.plugins.kubernetes.settings import KubernetesSettings
from agent.plugins.kubernetes.status import (
    FATAL_AT_ONCE,
    PULL_FAILURES,
    deadline_exceeded,
    observed,
    pod_problems,
    progress_line,
    rollout_complete,
    template_selector,
)

log = logging.getLogger(__name__)

# (apiVersion, kind) of everything the plugin may create for a deployment, in delete order.
OPTIONAL_KINDS: list[tuple[str, str]] = [
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("networking.k8s.io/v1", "Ingress"),
]
ROUTE_KINDS: dict[str, tuple[str, str]] = {
    "openshift-route": ("route.openshift.io/v1", "Route"),
    "gateway": ("gateway.networking.k8s.io/v1", "HTTPRoute"),
}
CORE_KINDS: list[tuple[str, str]] = [("apps/v1", "Deployment"), ("v1", "Service")]

Progress = Callable[..., None]  # (message, **details), e.g. the action's EventReporter


def managed_kinds(settings: KubernetesSettings) -> list[tuple[str, str]]:
    """Kinds a deployment may own under these settings (for stop and pruning)."""
    kinds = [*OPTIONAL_KINDS]
    if settings.ingress_mode in ROUTE_KINDS:
        kinds.append(ROUTE_KINDS[settings.ingress_mode])
    return [*kinds, *reversed(CORE_KINDS)]


def apply_all(client: KubeClient, objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Server-side apply each object in order; returns the live objects."""
    return [client.apply(obj) for obj in objects]


def prune(client: KubeClient, settings: KubernetesSettings, name: str,
          rendered: Iterable[dict[str, Any]]) -> list[str]:
    """Delete optional objects a previous rendering created but this one no longer has."""
    present = {obj["kind"] for obj in rendered}
    removed = []
    for api_version, kind in OPTIONAL_KINDS:
        if kind not in present and client.delete(api_version, kind, name):
            removed.append(kind)
    return removed


@dataclass
class Rollout:
    """Outcome of waiting for a Deployment's rollout."""

    done: bool
    message: str
    deployment: dict[str, Any] | None = None
    timed_out: bool = False


def _container_image(pod: dict[str, Any], container: str) -> str:
    spec = pod.get("spec") or {}
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if c.get("name") == container:
            return str(c.get("image"))
    return "?"


def diagnose(client: KubeClient, deployment: dict[str, Any], *, log_lines: int = 20) -> str:
    """Why the Deployment's newest pods are not available, in plain words."""
    reasons: list[str] = []
    condition = deadline_exceeded(deployment)
    if condition:
        reasons.append(condition)
    selector = template_selector(deployment)
    pods = client.list("v1", "Pod", deployment["metadata"].get("namespace"),
                       label_selector=selector) if selector else []
    if not pods and not condition:
        reasons.append("no pod of the new template was created")
    for pod in pods[:3]:
        pod_name = pod["metadata"]["name"]
        problems = pod_problems(pod)
        for reason, container, message in problems:
            if reason in PULL_FAILURES:
                reasons.append(
                    f"pod {pod_name}: image {_container_image(pod, container)} cannot be pulled "
                    f"({reason}{': ' + message if message else ''})")
            elif reason == "FailedScheduling":
                reasons.append(f"pod {pod_name} cannot be scheduled (Pending, FailedScheduling: "
                               f"{message}); check resources requests, node selectors and "
                               "tolerations")
            else:
                text = f"pod {pod_name}: container {container} fails ({reason}"
                text += f": {message})" if message else ")"
                logs = _tail(client, pod, container, log_lines)
                if logs:
                    text += f"; last log lines:\n{logs}"
                reasons.append(text)
        if not problems:
            phase = (pod.get("status") or {}).get("phase")
            if phase == "Pending":
                reasons.append(f"pod {pod_name} is Pending")
            elif phase == "Running":
                # e.g. a server that is up but never loaded its model: its log says why
                text = f"pod {pod_name} is running but not ready (readiness probe failing?)"
                containers = (pod.get("spec") or {}).get("containers") or [{}]
                logs = _tail(client, pod, containers[0].get("name", ""), log_lines)
                reasons.append(text + (f"; last log lines:\n{logs}" if logs else ""))
        if problems:
            continue  # the container states said it; events would repeat it
        warnings = [e for e in _events(client, pod) if e.get("type") == "Warning"]
        for event in warnings[-3:]:
            reasons.append(f"pod {pod_name}: event {event.get('reason')}: {event.get('message')}")
    return "; ".join(dict.fromkeys(reasons)) or "unknown reason"


def _tail(client: KubeClient, pod: dict[str, Any], container: str, lines: int) -> str:
    try:
        return client.pod_logs(pod["metadata"]["name"], pod["metadata"].get("namespace"),
                               container=container, tail_lines=lines).strip()
    except Exception as exc:  # logs are a courtesy; never hide the real failure
        log.debug("cannot read logs of %s: %s", pod["metadata"]["name"], exc)
        return ""


def _events(client: KubeClient, pod: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        return client.events_for("Pod", pod["metadata"]["name"], pod["metadata"].get("namespace"))
    except Exception as exc:
        log.debug("cannot read events of %s: %s", pod["metadata"]["name"], exc)
        return []


def wait_for_rollout(
    client: KubeClient,
    settings: KubernetesSettings,
    name: str,
    *,
    timeout: float,
    progress: Progress | None = None,
    deployment_id: str = "?",
) -> Rollout:
    """Poll the Deployment until its rollout is complete, failed, or `timeout` passes."""
    deadline = time.monotonic() + timeout
    last_line = ""
    stuck_since: dict[str, float] = {}
    deployment: dict[str, Any] | None = None
    while True:
        deployment = client.get("apps/v1", "Deployment", name)
        if deployment is None:
            return Rollout(False, f"Deployment {name} disappeared during the rollout")
        if rollout_complete(deployment):
            return Rollout(True, "rollout complete", deployment)
        line = progress_line(deployment)
        if line != last_line:
            log.debug("deployment %s: %s", deployment_id, line)
            if progress is not None:
                status = deployment.get("status") or {}
                progress(line, ready_replicas=status.get("readyReplicas") or 0,
                         replicas=(deployment.get("spec") or {}).get("replicas", 1))
            last_line = line
        failed = None
        # conditions describe the generation the controller last saw: until it has seen ours,
        # a ProgressDeadlineExceeded (or stuck pods) may be left over from an earlier rollout
        if observed(deployment):
            failed = deadline_exceeded(deployment)
            if failed is None:
                failed = _stuck(client, deployment, settings, stuck_since)
        if failed is not None:
            return Rollout(False, diagnose(client, deployment), deployment)
        if time.monotonic() >= deadline:
            return Rollout(
                False, f"not available after {timeout:.0f}s: {diagnose(client, deployment)}",
                deployment, timed_out=True,
            )
        time.sleep(settings.poll_interval_seconds)


def _stuck(client: KubeClient, deployment: dict[str, Any], settings: KubernetesSettings,
           since: dict[str, float]) -> str | None:
    """A reason when new pods have been failing for longer than fail_fast_seconds."""
    selector = template_selector(deployment)
    if not selector:
        return None
    now = time.monotonic()
    seen: set[str] = set()
    for pod in client.list("v1", "Pod", deployment["metadata"].get("namespace"),
                           label_selector=selector):
        # a container that keeps restarting (e.g. a server that exits 0 when its model does
        # not load) is Running between back-offs: its clock keeps going
        seen.update(f"{pod['metadata']['name']}/{cs.get('name', '?')}"
                    for cs in (pod.get("status") or {}).get("containerStatuses") or []
                    if cs.get("restartCount", 0) > 0 and not cs.get("ready"))
        for reason, container, _ in pod_problems(pod):
            if reason == "FailedScheduling":
                continue  # the cluster autoscaler may add a node; wait for the deadline
            key = f"{pod['metadata']['name']}/{container}"
            seen.add(key)
            first = since.setdefault(key, now)
            if reason in FATAL_AT_ONCE or now - first >= settings.fail_fast_seconds:
                return reason
    for key in list(since):
        if key not in seen:
            del since[key]
    return None
