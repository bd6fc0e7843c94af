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

from agent.logs import redact_uris_in
from agent.plugins.kubernetes.client import FIELD_MANAGER, KubeClient, NotFoundError
from agent.plugins.kubernetes.names import managed_selector
from agent.plugins.kubernetes.settings import KubernetesSettings
from agent.plugins.kubernetes.status import (
    FATAL_AT_ONCE,
    PULL_FAILURES,
    deadline_exceeded,
    image_volume_problems,
    observed,
    pod_problems,
    pod_ready,
    progress_line,
    rollout_complete,
    template_selector,
    waiting_for_image_volumes,
)

log = logging.getLogger(__name__)

# (apiVersion, kind) of the public routes of each ingress mode; stop and prune remove all
# three, since a deployment keeps the route of the mode the agent had when it was applied.
ROUTE_KINDS: dict[str, tuple[str, str]] = {
    "nginx": ("networking.k8s.io/v1", "Ingress"),
    "openshift-route": ("route.openshift.io/v1", "Route"),
    "gateway": ("gateway.networking.k8s.io/v1", "HTTPRoute"),
}
# (apiVersion, kind) of the optional objects of a deployment, in delete order.
OPTIONAL_KINDS: list[tuple[str, str]] = [
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    *dict.fromkeys(ROUTE_KINDS.values()),
]
CORE_KINDS: list[tuple[str, str]] = [("apps/v1", "Deployment"), ("v1", "Service")]
HANDOVER_MANAGER = "management-agent-handover-to-hpa"

Progress = Callable[..., None]  # (message, **details), e.g. the action's EventReporter


def managed_kinds(settings: KubernetesSettings) -> list[tuple[str, str]]:
    """Kinds a deployment may be given under these settings (what they apply)."""
    route = ROUTE_KINDS.get("nginx" if settings.ingress_mode == "prefix"
                            else settings.ingress_mode)
    kinds = [k for k in OPTIONAL_KINDS if k not in ROUTE_KINDS.values() or k == route]
    return [*kinds, *reversed(CORE_KINDS)]


def removable_kinds() -> list[tuple[str, str]]:
    """Kinds a deployment may own under any settings, in delete order (stop and prune)."""
    return [*OPTIONAL_KINDS, *reversed(CORE_KINDS)]


def owned(client: KubeClient, api_version: str, kind: str,
          deployment_id: str) -> list[dict[str, Any]]:
    """Objects of a kind labelled as one deployment's; none when the cluster lacks the kind."""
    try:
        return client.list(api_version, kind,
                           label_selector=managed_selector(deployment_id=deployment_id))
    except NotFoundError:  # the API is not served here (e.g. Route on vanilla Kubernetes)
        return []


def apply_all(client: KubeClient, objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Server-side apply each object in order; returns the live objects."""
    live = []
    for obj in objects:
        if obj["kind"] == "Deployment" and "replicas" not in obj["spec"]:
            hand_over_replicas(client, obj)
        live.append(client.apply(obj))
    return live


def hand_over_replicas(client: KubeClient, deployment: dict[str, Any]) -> bool:
    """Before an apply that drops spec.replicas (an HPA takes over), keep its live value.

    Server-side apply resets a field its sole manager stops setting to the default: the
    Deployment would fall to 1 replica. As the Kubernetes docs recommend ("Transferring
    ownership"), a second field manager first applies the live value, so the agent's apply
    that drops the field leaves it to that manager; the HPA's scale writes take it over.
    """
    meta = deployment["metadata"]
    live = client.get("apps/v1", "Deployment", meta["name"], meta.get("namespace"))
    if live is None or "replicas" not in live["spec"] or not _owns_replicas(live):
        return False
    client.apply({"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": meta["name"], **(
                      {"namespace": meta["namespace"]} if meta.get("namespace") else {})},
                  "spec": {"replicas": live["spec"]["replicas"]}},
                 field_manager=HANDOVER_MANAGER)
    return True


def _owns_replicas(live: dict[str, Any]) -> bool:
    """True when the agent's apply is the only manager of spec.replicas."""
    owners = [e for e in live["metadata"].get("managedFields") or []
              if "f:replicas" in ((e.get("fieldsV1") or {}).get("f:spec") or {})]
    return any(e.get("manager") == FIELD_MANAGER and e.get("operation") == "Apply"
               for e in owners) and len(owners) == 1


def prune(client: KubeClient, deployment_id: str,
          rendered: Iterable[dict[str, Any]]) -> list[str]:
    """Delete a deployment's optional objects the rendering no longer has (any route kind)."""
    wanted = {(obj["kind"], obj["metadata"]["name"]) for obj in rendered}
    removed = []
    for api_version, kind in OPTIONAL_KINDS:
        for obj in owned(client, api_version, kind, deployment_id):
            name = obj["metadata"]["name"]
            if (kind, name) not in wanted and client.delete(api_version, kind, name):
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
        volume_problems = _volume_problems(client, pod)
        for reason, volume, message in volume_problems:
            reasons.append(f"pod {pod_name}: image volume {volume} cannot be pulled "
                           f"({reason}: {message})")
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
        if not problems and not volume_problems:
            phase = (pod.get("status") or {}).get("phase")
            if phase == "Pending":
                reasons.append(f"pod {pod_name} is Pending")
            elif phase == "Running":
                # e.g. a server that is up but never loaded its model: its log says why
                text = f"pod {pod_name} is running but not ready (readiness probe failing?)"
                containers = (pod.get("spec") or {}).get("containers") or [{}]
                logs = _tail(client, pod, containers[0].get("name", ""), log_lines)
                reasons.append(text + (f"; last log lines:\n{logs}" if logs else ""))
        if problems or volume_problems:
            continue  # the container states (or the pull events) said it
        warnings = [e for e in _events(client, pod) if e.get("type") == "Warning"]
        for event in warnings[-3:]:
            reasons.append(f"pod {pod_name}: event {event.get('reason')}: {event.get('message')}")
    return "; ".join(dict.fromkeys(reasons)) or "unknown reason"


def _tail(client: KubeClient, pod: dict[str, Any], container: str, lines: int) -> str:
    """The container's last log lines, every URI in them redacted (they go into results)."""
    try:
        return redact_uris_in(client.pod_logs(
            pod["metadata"]["name"], pod["metadata"].get("namespace"),
            container=container, tail_lines=lines).strip())
    except Exception as exc:  # logs are a courtesy; never hide the real failure
        log.debug("cannot read logs of %s: %s", pod["metadata"]["name"], exc)
        return ""


def _volume_problems(client: KubeClient, pod: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Image volumes of a waiting pod that the kubelet failed to pull (from its events)."""
    if not waiting_for_image_volumes(pod):
        return []
    return image_volume_problems(pod, _events(client, pod))


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
                progress(line, ready_replicas=_new_pods_ready(client, deployment),
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


def _new_pods_ready(client: KubeClient, deployment: dict[str, Any]) -> int:
    """Ready pods of the template being rolled out (`readyReplicas` also counts the old
    ones a surge keeps, which would read "2/1 ready")."""
    selector = template_selector(deployment)
    if not selector:
        return 0
    pods = client.list("v1", "Pod", deployment["metadata"].get("namespace"),
                       label_selector=selector)
    return sum(1 for pod in pods
               if pod_ready(pod) and not (pod.get("metadata") or {}).get("deletionTimestamp"))


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
        for reason, container, _ in [*pod_problems(pod), *_volume_problems(client, pod)]:
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
