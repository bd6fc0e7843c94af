"""Rollout arithmetic, pod diagnosis, status mapping, last good model (pure, no cluster)."""

from __future__ import annotations

from typing import Any

from agent.model import DeploymentSpec, DeploymentState, Status
from agent.plugins.kubernetes import names
from agent.plugins.kubernetes.apply import managed_kinds, removable_kinds
from agent.plugins.kubernetes.history import last_good
from agent.plugins.kubernetes.manifests import render
from agent.plugins.kubernetes.settings import KubernetesSettings
from agent.plugins.kubernetes.status import (
    deadline_exceeded,
    image_volume_problems,
    pod_problems,
    rollout_complete,
    serving,
    status_of,
    template_selector,
    waiting_for_image_volumes,
)


def deployment(want: int = 2, generation: int = 2, **status: Any) -> dict[str, Any]:
    spec = DeploymentSpec.model_validate({"id": "d", "model": {"id": "m", "image": "i"},
                                          "replicas": want})
    dep = render(spec, KubernetesSettings(), "i", "e")[0]
    dep["metadata"]["generation"] = generation
    dep["status"] = status
    return dep


def test_rollout_complete() -> None:
    assert rollout_complete(deployment(observedGeneration=2, replicas=2, updatedReplicas=2,
                                       availableReplicas=2))
    assert not rollout_complete(deployment(observedGeneration=1, replicas=2, updatedReplicas=2,
                                           availableReplicas=2))  # controller not caught up
    assert not rollout_complete(deployment(observedGeneration=2, replicas=3, updatedReplicas=2,
                                           availableReplicas=3))  # an old pod is left
    assert not rollout_complete(deployment(observedGeneration=2, replicas=2, updatedReplicas=2,
                                           availableReplicas=1))
    assert rollout_complete(deployment(want=0, observedGeneration=2))


def _pod(dep: dict[str, Any], name: str, *, template_hash: str | None = None,
         ready: bool = True, terminating: bool = False) -> dict[str, Any]:
    """A pod as the API returns it: the template's labels plus pod-template-hash."""
    labels = dict(dep["spec"]["template"]["metadata"]["labels"])
    if template_hash is not None:
        labels[names.LABEL_TEMPLATE_HASH] = template_hash
    labels["pod-template-hash"] = "5d8f7c9b4" if template_hash is None else "7f6c8d5b9"
    meta: dict[str, Any] = {"name": name, "namespace": "default", "labels": labels}
    if terminating:
        meta.update(deletionTimestamp="2026-12-05T02:00:00Z", deletionGracePeriodSeconds=30)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "status": {
        "phase": "Running", "conditions": [
            {"type": "Ready", "status": "True" if ready else "False"},
            {"type": "ContainersReady", "status": "True" if ready else "False"}]}}


def test_serving_counts_only_ready_pods_of_the_current_template() -> None:
    """Mid-rollout: the Deployment counts two available replicas, both of the old template
    (one of them already terminating); the new template's pod is not ready yet."""
    dep = deployment(observedGeneration=2, replicas=3, updatedReplicas=1, availableReplicas=2)
    old_ready = _pod(dep, "old-1", template_hash="0ld0ld0ld0")
    old_terminating = _pod(dep, "old-2", template_hash="0ld0ld0ld0", terminating=True)
    new_starting = _pod(dep, "new-1", ready=False)
    pods = [old_ready, old_terminating, new_starting]
    assert not serving(dep, pods)  # the old model's pods do not make the new one serve
    assert not serving(dep, [*pods, _pod(dep, "new-2", terminating=True)])  # on its way out
    assert serving(dep, [*pods, _pod(dep, "new-3")])
    assert not serving(None, pods) and not serving(dep, [])
    # status still says the old pods serve while the new ones fail or start
    assert status_of(dep, [new_starting]).state == DeploymentState.REPLACING_MODEL


def test_deadline_and_replica_failure_conditions() -> None:
    dep = deployment(conditions=[{"type": "Progressing", "status": "False",
                                  "reason": "ProgressDeadlineExceeded",
                                  "message": 'ReplicaSet "x" has timed out progressing.'}])
    assert deadline_exceeded(dep) == 'ReplicaSet "x" has timed out progressing.'
    dep = deployment(conditions=[{"type": "ReplicaFailure", "status": "True",
                                  "reason": "FailedCreate", "message": "exceeded quota"}])
    assert deadline_exceeded(dep) == "exceeded quota"
    assert deadline_exceeded(deployment(conditions=[
        {"type": "Progressing", "status": "True"}])) is None


def test_template_selector_targets_newest_pods() -> None:
    dep = deployment()
    selector = template_selector(dep)
    template_hash = dep["spec"]["template"]["metadata"]["labels"][names.LABEL_TEMPLATE_HASH]
    assert f"{names.LABEL_TEMPLATE_HASH}={template_hash}" in selector
    assert f"{names.LABEL_INSTANCE}=d" in selector


def test_pod_problems() -> None:
    pod = {"status": {
        "initContainerStatuses": [{"name": "storage-initializer", "state": {
            "terminated": {"exitCode": 2, "reason": "Error"}}}],
        "containerStatuses": [
            {"name": "server", "state": {"waiting": {"reason": "ImagePullBackOff",
                                                     "message": "manifest unknown"}}},
            {"name": "monitoring", "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
            {"name": "ok", "state": {"running": {}}},
        ],
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": "0/3 nodes: insufficient memory"}],
    }}
    assert pod_problems(pod) == [
        ("Error", "storage-initializer", "exit code 2 Error"),
        ("ImagePullBackOff", "server", "manifest unknown"),
        ("CrashLoopBackOff", "monitoring", ""),
        ("FailedScheduling", "", "0/3 nodes: insufficient memory"),
    ]
    assert pod_problems({"status": {"phase": "Running"}}) == []


def _volume_pod(*waiting: str) -> dict[str, Any]:
    return {"metadata": {"name": "p"},
            "spec": {"volumes": [{"name": "model", "image": {"reference": "r/m@sha256:aa"}},
                                 {"name": "scratch", "emptyDir": {}}]},
            "status": {"phase": "Pending", "containerStatuses": [
                {"name": "server", "state": {"waiting": {"reason": reason}}}
                for reason in waiting]}}


def _event(reason: str, message: str) -> dict[str, Any]:
    return {"reason": reason, "message": message, "type": "Warning"}


def test_image_volume_pull_failures_are_read_from_the_kubelets_events() -> None:
    """A kubelet pulls image volumes before creating containers: the containers say only
    ContainerCreating, the image manager's events say why (and a later Pulled clears it)."""
    pod = _volume_pod("ContainerCreating")
    assert waiting_for_image_volumes(pod)
    assert not waiting_for_image_volumes(_volume_pod("ImagePullBackOff"))
    assert not waiting_for_image_volumes({**pod, "spec": {"volumes": []}})
    assert not waiting_for_image_volumes({**pod, "status": {"phase": "Running"}})

    denied = _event("Failed", 'Failed to pull image "r/m@sha256:aa": unauthorized')
    assert image_volume_problems(pod, [
        _event("Pulling", 'Pulling image "r/m@sha256:aa"'), denied,
        _event("Failed", 'Failed to pull image "other/image:1": not found'),  # not a volume
    ]) == [("ErrImagePull", "model", 'Failed to pull image "r/m@sha256:aa": unauthorized')]
    pulled = _event("Pulled", 'Successfully pulled image "r/m@sha256:aa" in 1.2s')
    assert image_volume_problems(pod, [denied, pulled]) == []
    never = _event("ErrImageNeverPull",
                   'Container image "r/m@sha256:aa" is not present with pull policy of Never')
    assert image_volume_problems(pod, [never]) == [("ErrImageNeverPull", "model",
                                                    never["message"])]


def test_diagnosis_names_the_image_volume_that_cannot_be_pulled() -> None:
    """FakeKube scripts the pod and its kubelet events (the stand-in's own events are
    checked end to end in tests/e2e/test_e2e_image_volume.py)."""
    from agent.plugins.kubernetes.apply import diagnose
    from tests.fixtures.fakekube import FakeKube

    pod = _volume_pod("ContainerCreating")
    pod["metadata"]["namespace"] = "default"
    event = {**_event("Failed", 'Failed to pull image "r/m@sha256:aa": unauthorized'),
             "involvedObject": {"kind": "Pod", "name": "p"}}
    client: Any = FakeKube(pods=[pod], events=[event])
    text = diagnose(client, deployment())
    assert text == ('pod p: image volume model cannot be pulled (ErrImagePull: Failed to '
                    'pull image "r/m@sha256:aa": unauthorized)')


def test_managed_kinds_follow_ingress_mode() -> None:
    kinds = [k for _, k in managed_kinds(KubernetesSettings())]
    assert "Route" not in kinds and "Ingress" in kinds and kinds[-1] == "Deployment"
    route = [k for _, k in managed_kinds(KubernetesSettings(ingress_mode="openshift-route"))]
    assert "Route" in route and "Ingress" not in route
    assert "Ingress" not in [k for _, k in managed_kinds(KubernetesSettings(ingress_mode="none"))]


def test_stop_and_prune_remove_every_route_kind_whatever_the_mode() -> None:
    kinds = [k for _, k in removable_kinds()]
    assert {"Ingress", "Route", "HTTPRoute"} <= set(kinds)
    assert kinds[-2:] == ["Service", "Deployment"]  # the server goes last


def test_status_mapping_from_live_objects() -> None:
    ready = deployment(observedGeneration=2, replicas=2, updatedReplicas=2, availableReplicas=2)
    status = status_of(ready, [])
    assert (status.deployment_id, status.state, status.status, status.model_id) == (
        "d", DeploymentState.READY, Status.PASSING, "m")
    assert status.prediction_url == "http://localhost/d/v2/models/d/infer"

    launching = deployment(observedGeneration=2, replicas=1, updatedReplicas=1)
    assert status_of(launching, []).state == DeploymentState.LAUNCHING
    crashing = {"metadata": {"name": "p"}, "status": {"containerStatuses": [
        {"name": "server", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}
    errored = status_of(launching, [crashing])
    assert errored.state == DeploymentState.ERRORED and "CrashLoopBackOff" in (
        errored.message or "")
    replacing = deployment(want=2, observedGeneration=2, replicas=3, updatedReplicas=1,
                           availableReplicas=2)
    assert status_of(replacing, []).state == DeploymentState.REPLACING_MODEL
    old_serving = status_of(replacing, [crashing])
    assert old_serving.state == DeploymentState.READY and old_serving.status == Status.WARNING


class _NoCluster:
    """Neither case below may read the cluster: the answer is in the Deployment itself."""

    def get(self, *args: Any) -> None:
        raise AssertionError("Must not be called!")


def test_previous_is_only_the_last_good_model() -> None:
    dep = deployment()
    client: Any = _NoCluster()
    assert last_good(client, dep) is None, "the last applied model may never have worked"
    good = DeploymentSpec.model_validate({"id": "d", "model": {"id": "old", "image": "o"}})
    # written by an earlier agent: the whole spec in an annotation (read once, then moved)
    dep["metadata"]["annotations"][names.ANNOTATION_LAST_GOOD_SPEC] = good.model_dump_json()
    dep["metadata"]["annotations"][names.ANNOTATION_LAST_GOOD_IMAGE] = "o"
    assert last_good(client, dep) == (good, "o")
    assert last_good(client, None) is None


def test_diagnosis_log_tail_carries_no_user_info_or_signed_query() -> None:
    """A server that logs the URL it failed on: its tail goes into the action's result,
    redacted. FakeKube scripts the crashing pod and its log (the redaction is the unit
    under test; the stand-in cannot be made to log a chosen line on demand)."""
    from agent.plugins.kubernetes.apply import diagnose
    from tests.fixtures.fakekube import FakeKube

    crashing = {"metadata": {"name": "p1", "namespace": "default"}, "status": {
        "phase": "Running", "containerStatuses": [{"name": "server", "ready": False,
                                                   "state": {"waiting": {
                                                       "reason": "CrashLoopBackOff"}}}]}}
    log = ("GET https://ops:pa55-canary@store.example.com/m.tgz?"
           "X-Amz-Signature=sig-canary&X-Amz-Credential=AKIA answered 403")
    client: Any = FakeKube(pods=[crashing], logs=log)
    text = diagnose(client, deployment())
    assert "https://store.example.com/m.tgz?X-Amz-Signature=<redacted>" in text
    assert "pa55-canary" not in text and "sig-canary" not in text


def test_rollout_progress_events_count_ready_pods_of_the_new_template_only() -> None:
    """A scripted reader stands in for the API server here (the stand-in's rollouts are
    tested in tests/integration/kubernetes and by the demo's e2e test): what matters is the
    callback's details. Mid-surge the Deployment counts the old pod in readyReplicas; the
    event counts only ready pods of the new template (else: "pods ready 2/1")."""
    from agent.plugins.kubernetes.apply import wait_for_rollout
    from agent.plugins.kubernetes.status import template_selector

    states = [deployment(want=1, observedGeneration=2, replicas=2, updatedReplicas=1,
                         readyReplicas=2, availableReplicas=2),
              deployment(want=1, observedGeneration=2, replicas=1, updatedReplicas=1,
                         readyReplicas=1, availableReplicas=1)]
    selectors: list[str] = []

    class Reader:
        def get(self, *_: Any) -> dict[str, Any]:
            return states.pop(0)

        def list(self, *_: Any, label_selector: str = "") -> list[dict[str, Any]]:
            selectors.append(label_selector)
            ready = {"type": "Ready", "status": "True"}
            return [{"metadata": {"name": "new"}, "status": {"phase": "Running",
                                                             "conditions": [ready]}},
                    {"metadata": {"name": "new-gone", "deletionTimestamp": "t"},
                     "status": {"phase": "Running", "conditions": [ready]}},
                    {"metadata": {"name": "new-starting"}, "status": {"phase": "Pending"}}]

    seen: list[tuple[str, dict[str, Any]]] = []
    settings = KubernetesSettings.model_validate({"poll_interval_seconds": 0.01})
    rollout = wait_for_rollout(Reader(), settings, "d", timeout=5,  # type: ignore[arg-type]
                               progress=lambda line, **details: seen.append((line, details)))
    assert rollout.done
    assert seen == [("rollout: 1/1 updated, 2 available, 2 total",
                     {"ready_replicas": 1, "replicas": 1})]
    assert selectors and selectors[0] == template_selector(deployment())
