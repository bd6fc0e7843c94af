"""Reading live objects: rollout complete?, what is wrong with a pod, what state a deployment is in.

Pure functions over the dictionaries the API server returns; no I/O, so the
rules are unit-tested without a cluster. `apply.wait_for_rollout` and the
plugin's status calls feed them live objects.
"""

from __future__ import annotations

from typing import Any

from agent.model import DeploymentState, DeploymentStatus, Status
from agent.plugins.kubernetes import names

PULL_FAILURES = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull",
                 "RegistryUnavailable"}
CRASH_FAILURES = {"CrashLoopBackOff", "RunContainerError", "CreateContainerError",
                  "CreateContainerConfigError"}
FATAL_AT_ONCE = {"InvalidImageName", "ErrImageNeverPull"}


def rollout_complete(deployment: dict[str, Any]) -> bool:
    """True when the newest template runs on every replica and nothing old is left."""
    meta, spec, status = (deployment.get(k) or {} for k in ("metadata", "spec", "status"))
    wanted = spec.get("replicas", 1)
    if (status.get("observedGeneration") or 0) < (meta.get("generation") or 0):
        return False
    if wanted == 0:
        return not status.get("replicas")
    return (
        (status.get("updatedReplicas") or 0) == wanted
        and (status.get("availableReplicas") or 0) >= wanted
        and (status.get("replicas") or 0) == wanted
    )


def any_available(deployment: dict[str, Any] | None) -> bool:
    """True when the Deployment counts an available replica, of its current or an old template."""
    return bool(deployment and (deployment.get("status") or {}).get("availableReplicas"))


def current_pods(deployment: dict[str, Any], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pods of the Deployment's current template that are not being deleted.

    The template-hash label covers the whole pod template, so it names the current revision
    as the ReplicaSet's pod-template-hash does; pods of older revisions and terminating pods
    left by a rollout do not count.
    """
    labels = (((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
        "labels") or {}
    keys = (names.LABEL_INSTANCE, names.LABEL_TEMPLATE_HASH)
    if not all(k in labels for k in keys):
        return []
    return [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")
            and all(((p.get("metadata") or {}).get("labels") or {}).get(k) == labels[k]
                    for k in keys)]


def pod_ready(pod: dict[str, Any]) -> bool:
    """A running pod whose Ready condition is True (it is in the Service's endpoints)."""
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or [])


def serving(deployment: dict[str, Any] | None, pods: list[dict[str, Any]]) -> bool:
    """True when a ready pod of the Deployment's current template serves its model."""
    return deployment is not None and any(pod_ready(p) for p in current_pods(deployment, pods))


def deadline_exceeded(deployment: dict[str, Any]) -> str | None:
    """The controller's ProgressDeadlineExceeded / ReplicaFailure message, if any."""
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("status") == "False":
            return str(condition.get("message") or condition.get("reason"))
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            return str(condition.get("message") or condition.get("reason"))
    return None


def progress_line(deployment: dict[str, Any]) -> str:
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    return (f"rollout: {status.get('updatedReplicas') or 0}/{spec.get('replicas', 1)} updated, "
            f"{status.get('availableReplicas') or 0} available, "
            f"{status.get('replicas') or 0} total")


def template_selector(deployment: dict[str, Any]) -> str:
    """Label selector of the pods of the Deployment's current template."""
    labels = (((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
        "labels") or {}
    keys = (names.LABEL_INSTANCE, names.LABEL_NAME, names.LABEL_TEMPLATE_HASH)
    return ",".join(f"{k}={labels[k]}" for k in keys if k in labels)


def image_volumes(pod: dict[str, Any]) -> dict[str, str]:
    """Image-volume reference -> volume name, for the pod's `volumes[].image`."""
    return {str(v["image"].get("reference")): str(v.get("name"))
            for v in (pod.get("spec") or {}).get("volumes") or []
            if isinstance(v.get("image"), dict) and v["image"].get("reference")}


def image_volume_problems(pod: dict[str, Any],
                          events: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(reason, volume, message) of each image volume the kubelet failed to pull.

    A kubelet pulls image volumes before it creates any container, so a failed
    pull leaves every container `ContainerCreating` and is told only by the
    image manager's events on the pod (`events` oldest first): `Failed` "Failed
    to pull image "<ref>": ..." and `ErrImageNeverPull`, until a `Pulled` one.
    """
    references = image_volumes(pod)
    found: dict[str, tuple[str, str, str]] = {}  # the newest event per volume
    for event in events:
        message = str(event.get("message") or "")
        reason = event.get("reason")
        for reference, volume in references.items():
            if f'"{reference}"' not in message:
                continue
            if reason == "Pulled":  # a later pull succeeded
                found.pop(volume, None)
            elif reason == "Failed" and message.startswith("Failed to pull image"):
                found[volume] = ("ErrImagePull", volume, message)
            elif reason == "ErrImageNeverPull":
                found[volume] = ("ErrImageNeverPull", volume, message)
    return list(found.values())


def waiting_for_image_volumes(pod: dict[str, Any]) -> bool:
    """A Pending pod with image volumes whose containers were never created."""
    status = pod.get("status") or {}
    if status.get("phase") != "Pending" or not image_volumes(pod):
        return False
    return all(((cs.get("state") or {}).get("waiting") or {}).get("reason") in
               (None, "ContainerCreating", "PodInitializing")
               for cs in [*(status.get("initContainerStatuses") or []),
                          *(status.get("containerStatuses") or [])])


def pod_problems(pod: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(reason, container, message) of each container of a pod that is stuck."""
    status = pod.get("status") or {}
    found = []
    statuses = [*(status.get("initContainerStatuses") or []),
                *(status.get("containerStatuses") or [])]
    for cs in statuses:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason") or ""
        if reason in PULL_FAILURES or reason in CRASH_FAILURES:
            found.append((reason, cs.get("name", "?"), waiting.get("message") or ""))
            continue
        terminated = (cs.get("state") or {}).get("terminated") or {}
        if terminated and terminated.get("exitCode", 0) != 0:
            found.append(("Error", cs.get("name", "?"),
                          f"exit code {terminated.get('exitCode')} "
                          f"{terminated.get('reason') or ''}".strip()))
    for condition in status.get("conditions") or []:
        if (condition.get("type") == "PodScheduled" and condition.get("status") == "False"
                and condition.get("reason") == "Unschedulable"):
            found.append(("FailedScheduling", "", condition.get("message") or ""))
    return found



def observed(deployment: dict[str, Any]) -> bool:
    """True once the controller has observed the Deployment's current generation."""
    generation = deployment["metadata"].get("generation", 0)
    return int((deployment.get("status") or {}).get("observedGeneration", 0)) >= generation


def status_of(deployment: dict[str, Any], pods: list[dict[str, Any]]) -> DeploymentStatus:
    """A deployment's state from its live Deployment and the pods of its newest template."""
    meta = deployment["metadata"]
    annotations = meta.get("annotations") or {}
    deployment_id = annotations.get(names.ANNOTATION_DEPLOYMENT_ID) or (
        meta.get("labels") or {}).get(names.LABEL_DEPLOYMENT_ID, meta["name"])
    base = {
        "deployment_id": deployment_id,
        "model_id": annotations.get(names.ANNOTATION_MODEL_ID),
        "prediction_url": annotations.get(names.ANNOTATION_PREDICTION_URL),
    }
    if meta.get("deletionTimestamp"):
        return DeploymentStatus(**base, state=DeploymentState.STOPPED, status=Status.UNKNOWN,
                                message="being deleted")
    if rollout_complete(deployment):
        if deployment["spec"].get("replicas", 1) == 0:
            return DeploymentStatus(**base, state=DeploymentState.STOPPED,
                                    status=Status.PASSING, message="scaled to zero replicas")
        return DeploymentStatus(**base, state=DeploymentState.READY, status=Status.PASSING,
                                message="all replicas available")
    problems = [f"{pod['metadata']['name']}: {reason}" + (f" ({c})" if c else "")
                for pod in pods for reason, c, _ in pod_problems(pod)]
    failed = deadline_exceeded(deployment)
    if failed or problems:
        reason = failed or "; ".join(problems)
        if any_available(deployment):
            return DeploymentStatus(**base, state=DeploymentState.READY, status=Status.WARNING,
                                    message=f"new pods failing ({reason}); old pods serve")
        return DeploymentStatus(**base, state=DeploymentState.ERRORED, status=Status.FAILING,
                                message=reason)
    if any_available(deployment):
        return DeploymentStatus(**base, state=DeploymentState.REPLACING_MODEL,
                                status=Status.PASSING, message="rollout in progress")
    return DeploymentStatus(**base, state=DeploymentState.LAUNCHING, status=Status.UNKNOWN,
                            message="waiting for replicas to become available")
