"""CRUD semantics of the stand-in through the official Python client and raw HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.fixtures.kube import KubeAPI


def cm(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}


def deploy(name: str, image: str = "nginx:1.25", replicas: int = 1) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}}}


def status_of(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)


def test_discovery_documents(kube_api: KubeAPI) -> None:
    version = requests.get(f"{kube_api.url}/version", timeout=5).json()
    assert version["major"] == "1" and version["minor"] == "33"
    assert requests.get(f"{kube_api.url}/api", timeout=5).json()["versions"] == ["v1"]
    groups = {g["name"] for g in requests.get(f"{kube_api.url}/apis", timeout=5).json()["groups"]}
    assert {"apps", "batch", "networking.k8s.io", "rbac.authorization.k8s.io"} <= groups
    core = requests.get(f"{kube_api.url}/api/v1", timeout=5).json()
    pods = next(r for r in core["resources"] if r["name"] == "pods")
    assert pods["namespaced"] and pods["kind"] == "Pod" and "po" in pods["shortNames"]
    assert {"create", "list", "watch", "deletecollection", "patch"} <= set(pods["verbs"])
    names = {r["name"] for r in core["resources"]}
    assert {"pods/log", "pods/status", "namespaces", "secrets"} <= names
    apps = requests.get(f"{kube_api.url}/apis/apps/v1", timeout=5).json()
    scale = next(r for r in apps["resources"] if r["name"] == "deployments/scale")
    assert scale["kind"] == "Scale" and scale["group"] == "autoscaling"
    missing = requests.get(f"{kube_api.url}/apis/nope/v1", timeout=5)
    assert missing.status_code == 404 and missing.json()["kind"] == "Status"


def test_bootstrap_namespaces(kube_api: KubeAPI) -> None:
    v1 = client.CoreV1Api(kube_api.client())
    names = {n.metadata.name for n in v1.list_namespace().items}
    assert {"default", "kube-system", "kube-public", "ingress-nginx"} <= names
    ns = v1.read_namespace("default")
    assert ns.status.phase == "Active"
    assert v1.read_namespaced_service_account("default", "default").metadata.uid


def test_create_sets_server_fields_and_rv_increases(kube_api: KubeAPI) -> None:
    v1 = client.CoreV1Api(kube_api.client())
    a = v1.create_namespaced_config_map("default", cm("a"))
    b = v1.create_namespaced_config_map("default", {**cm(""), "metadata": {"generateName": "g-"}})
    assert a.metadata.uid and a.metadata.creation_timestamp
    assert int(b.metadata.resource_version) > int(a.metadata.resource_version)
    assert b.metadata.name.startswith("g-") and len(b.metadata.name) == 7
    assert a.metadata.generation is None  # no spec: no generation
    listing = v1.list_namespaced_config_map("default")
    assert int(listing.metadata.resource_version) >= int(b.metadata.resource_version)


def test_error_bodies(kube_api: KubeAPI) -> None:
    v1 = client.CoreV1Api(kube_api.client())
    apps = client.AppsV1Api(kube_api.client())
    v1.create_namespaced_config_map("default", cm("a"))
    with pytest.raises(ApiException) as err:
        v1.create_namespaced_config_map("default", cm("a"))
    assert status_of(err.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'configmaps "a" already exists', "reason": "AlreadyExists",
        "details": {"name": "a", "kind": "configmaps"}, "code": 409}
    with pytest.raises(ApiException) as err:
        apps.read_namespaced_deployment("nope", "default")
    assert status_of(err.value)["message"] == 'deployments.apps "nope" not found'
    assert status_of(err.value)["details"] == {"name": "nope", "group": "apps",
                                               "kind": "deployments"}
    with pytest.raises(ApiException) as err:
        v1.create_namespaced_config_map("missing-ns", cm("a"))
    assert err.value.status == 404
    assert status_of(err.value)["message"] == 'namespaces "missing-ns" not found'


def test_validation_errors_are_422_with_causes(kube_api: KubeAPI) -> None:
    v1 = client.CoreV1Api(kube_api.client())
    apps = client.AppsV1Api(kube_api.client())
    with pytest.raises(ApiException) as err:
        v1.create_namespaced_config_map("default", cm("Bad_Name"))
    body = status_of(err.value)
    assert err.value.status == 422 and body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    assert body["details"]["kind"] == "ConfigMap"
    bad = deploy("d")
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    del bad["spec"]["template"]["spec"]["containers"][0]["image"]
    with pytest.raises(ApiException) as err:
        apps.create_namespaced_deployment("default", bad)
    body = status_of(err.value)
    assert body["details"]["group"] == "apps"
    causes = {(c["field"], c["reason"]) for c in body["details"]["causes"]}
    assert ("spec.template.metadata.labels", "FieldValueInvalid") in causes
    assert ("spec.template.spec.containers[0].image", "FieldValueRequired") in causes
    # schema: wrong type (raw HTTP: the client would refuse to send it)
    raw = deploy("d")
    raw["spec"]["replicas"] = "two"
    r = requests.post(f"{kube_api.url}/apis/apps/v1/namespaces/default/deployments",
                      json=raw, timeout=5)
    assert r.status_code == 422
    assert r.json()["details"]["causes"][0]["field"] == "spec.replicas"
    # unknown field: strict decoding error
    raw = deploy("d")
    raw["spec"]["replicaz"] = 1
    r = requests.post(f"{kube_api.url}/apis/apps/v1/namespaces/default/deployments",
                      json=raw, timeout=5)
    assert r.status_code == 400 and 'unknown field "spec.replicaz"' in r.json()["message"]
    r = requests.post(f"{kube_api.url}/apis/apps/v1/namespaces/default/deployments"
                      "?fieldValidation=Warn", json=raw, timeout=5)
    assert r.status_code == 201 and "replicaz" in r.headers["Warning"]
    assert "replicaz" not in r.json()["spec"]


def test_a_prestop_sleep_longer_than_the_grace_period_is_invalid(kube_api: KubeAPI) -> None:
    """pkg/apis/core/validation validateSleepAction (zero allowed from 1.33, where the
    AllowPodLifecycleSleepActionZeroValue gate is on)."""
    url = f"{kube_api.url}/apis/apps/v1/namespaces/default/deployments"
    for name, seconds, grace, status in (("fits", 5, 30, 201), ("zero", 0, 30, 201),
                                         ("long", 31, 30, 422), ("short-grace", 6, 5, 422)):
        body = deploy(name)
        pod = body["spec"]["template"]["spec"]
        pod["terminationGracePeriodSeconds"] = grace
        pod["containers"][0]["lifecycle"] = {"preStop": {"sleep": {"seconds": seconds}}}
        r = requests.post(url, json=body, timeout=5)
        assert r.status_code == status, (name, r.text)
        if status == 422:
            assert r.json()["details"]["causes"] == [{
                "reason": "FieldValueInvalid",
                "field": "spec.template.spec.containers[0].lifecycle.preStop.sleep",
                "message": f"Invalid value: {seconds}: must be non-negative and less than "
                           f"terminationGracePeriodSeconds ({grace})"}]


def test_defaults(kube_api: KubeAPI) -> None:
    apps = client.AppsV1Api(kube_api.client())
    v1 = client.CoreV1Api(kube_api.client())
    batch = client.BatchV1Api(kube_api.client())
    d = apps.create_namespaced_deployment("default", deploy("d", image="nginx"))
    assert d.metadata.generation == 1
    assert d.spec.strategy.type == "RollingUpdate"
    assert d.spec.strategy.rolling_update.max_surge == "25%"
    assert d.spec.revision_history_limit == 10 and d.spec.progress_deadline_seconds == 600
    pod = d.spec.template.spec
    assert pod.restart_policy == "Always" and pod.dns_policy == "ClusterFirst"
    assert pod.termination_grace_period_seconds == 30
    assert pod.containers[0].image_pull_policy == "Always"  # :latest implied
    assert pod.containers[0].termination_message_path == "/dev/termination-log"
    svc = v1.create_namespaced_service("default", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"selector": {"app": "d"}, "ports": [{"port": 80}]}})
    assert svc.spec.cluster_ip.startswith("10.96.") and svc.spec.type == "ClusterIP"
    assert svc.spec.ports[0].protocol == "TCP" and svc.spec.ports[0].target_port == 80
    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"selector": {"app": "e"}, "ports": [{"port": 81}]}}
    kept = v1.replace_namespaced_service("s", "default", body)  # no clusterIP: kept
    assert kept.spec.cluster_ip == svc.spec.cluster_ip
    body["spec"]["clusterIP"] = "10.96.9.9"
    with pytest.raises(ApiException) as err:
        v1.replace_namespaced_service("s", "default", body)
    assert err.value.status == 422 and "may not change once set" in err.value.body
    job = batch.create_namespaced_job("default", {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "c", "image": "x:1"}]}}}})
    assert job.spec.backoff_limit == 6 and job.spec.completions == 1
    assert job.spec.selector.match_labels["batch.kubernetes.io/controller-uid"] == \
        job.metadata.uid


def test_update_generation_and_optimistic_concurrency(kube_api: KubeAPI) -> None:
    apps = client.AppsV1Api(kube_api.client())
    d = apps.create_namespaced_deployment("default", deploy("d"))
    d.metadata.labels = {"x": "1"}
    d2 = apps.replace_namespaced_deployment("d", "default", d)
    assert d2.metadata.generation == 1  # metadata-only change
    d2.spec.replicas = 3
    d3 = apps.replace_namespaced_deployment("d", "default", d2)
    assert d3.metadata.generation == 2
    d2.spec.replicas = 4  # stale resourceVersion
    with pytest.raises(ApiException) as err:
        apps.replace_namespaced_deployment("d", "default", d2)
    body = status_of(err.value)
    assert err.value.status == 409 and body["reason"] == "Conflict"
    assert body["message"] == ('Operation cannot be fulfilled on deployments.apps "d": the '
                               "object has been modified; please apply your changes to the "
                               "latest version and try again")
    same = apps.replace_namespaced_deployment("d", "default", d3)  # no-op update
    assert same.metadata.resource_version == d3.metadata.resource_version


def test_status_subresource(kube_api: KubeAPI) -> None:
    apps = client.AppsV1Api(kube_api.client())
    apps.create_namespaced_deployment("default", deploy("d"))
    s = apps.patch_namespaced_deployment_status(
        "d", "default", {"status": {"replicas": 1, "readyReplicas": 1},
                         "spec": {"replicas": 9}})
    assert s.status.ready_replicas == 1 and s.spec.replicas == 1  # spec ignored on /status
    d = apps.read_namespaced_deployment("d", "default")
    d.status.ready_replicas = 7
    d.spec.replicas = 2
    d = apps.replace_namespaced_deployment("d", "default", d)
    assert d.status.ready_replicas == 1 and d.spec.replicas == 2  # status ignored on main


def test_scale_subresource(kube_api: KubeAPI) -> None:
    apps = client.AppsV1Api(kube_api.client())
    apps.create_namespaced_deployment("default", deploy("d", replicas=2))
    scale = apps.read_namespaced_deployment_scale("d", "default")
    assert scale.spec.replicas == 2 and scale.status.selector == "app=d"
    apps.patch_namespaced_deployment_scale("d", "default", {"spec": {"replicas": 5}})
    assert apps.read_namespaced_deployment("d", "default").spec.replicas == 5


def test_list_selectors_and_pagination(kube_api: KubeAPI) -> None:
    v1 = client.CoreV1Api(kube_api.client())
    v1.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
    for i in range(5):
        v1.create_namespaced_config_map("default", cm(f"c{i}", tier="a" if i % 2 else "b"))
    v1.create_namespaced_config_map("other", cm("x", tier="a"))
    assert len(v1.list_namespaced_config_map("default", label_selector="tier=a").items) == 2
    assert len(v1.list_namespaced_config_map("default", label_selector="tier in (a,b)").items) \
        == 5
    assert len(v1.list_config_map_for_all_namespaces(label_selector="tier=a").items) == 3
    names = [c.metadata.name for c in v1.list_namespaced_config_map(
        "default", field_selector="metadata.name=c3").items]
    assert names == ["c3"]
    page = v1.list_namespaced_config_map("default", limit=2)
    seen = [c.metadata.name for c in page.items]
    while page.metadata._continue:
        page = v1.list_namespaced_config_map("default", limit=2, _continue=page.metadata._continue)
        seen += [c.metadata.name for c in page.items]
    assert seen == [f"c{i}" for i in range(5)]


def test_put_creates_and_post_on_name_is_405(kube_api: KubeAPI) -> None:
    r = requests.put(f"{kube_api.url}/api/v1/namespaces/default/configmaps/p", json=cm("p"),
                     timeout=5)
    assert r.status_code == 201
    r = requests.post(f"{kube_api.url}/api/v1/namespaces/default/configmaps/p", json=cm("p"),
                      timeout=5)
    assert r.status_code == 405 and r.json()["reason"] == "MethodNotAllowed"
    r = requests.delete(f"{kube_api.url}/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                        timeout=5)
    assert r.status_code == 405
    r = requests.delete(f"{kube_api.url}/api/v1/namespaces/default/configmaps/p/status",
                        timeout=5)
    assert r.status_code == 404  # configmaps have no status subresource
    requests.post(f"{kube_api.url}/api/v1/namespaces/default/pods", timeout=5, json={
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "x:1"}]}}).raise_for_status()
    r = requests.delete(f"{kube_api.url}/api/v1/namespaces/default/pods/p/status", timeout=5)
    assert r.status_code == 405
    r = requests.post(f"{kube_api.url}/api/v1/namespaces/default/pods/p/exec", timeout=5)
    assert r.status_code == 501 and "pods/exec" in r.json()["message"]


def test_pod_log_follow_stops_when_pod_completes(kube_api: KubeAPI) -> None:
    v1 = client.CoreV1Api(kube_api.client())
    v1.create_namespaced_pod("default", {"apiVersion": "v1", "kind": "Pod",
                                         "metadata": {"name": "p"},
                                         "spec": {"containers": [{"name": "c", "image": "x:1"}]}})
    log = kube_api.state_dir / "logs" / "default" / "p" / "c.log"
    log.parent.mkdir(parents=True)
    log.write_text("a\n")
    url = f"{kube_api.url}/api/v1/namespaces/default/pods/p/log"
    with requests.get(url, params={"follow": "true"}, stream=True, timeout=10) as r:
        lines = r.iter_lines()
        assert next(lines) == b"a"
        with log.open("a") as f:
            f.write("b\n")
        assert next(lines) == b"b"
        v1.patch_namespaced_pod_status("p", "default", {"status": {"phase": "Succeeded"}})
        assert list(lines) == []
    r = requests.get(url, params={"container": "nope"}, timeout=5)
    assert r.status_code == 400 and r.json()["message"] == "container nope is not valid for pod p"
    r = requests.get(url, params={"previous": "true"}, timeout=5)
    assert r.status_code == 400


def test_protobuf_bodies_for_simple_kinds(kube_api: KubeAPI) -> None:
    """What typed client-go clients (kubectl create secret, helm) send."""
    def field(num: int, payload: bytes) -> bytes:
        return bytes([num << 3 | 2, len(payload)]) + payload

    meta = field(1, b"pb")
    secret = field(1, meta) + field(2, field(1, b"k") + field(2, b"v")) + field(3, b"Opaque")
    body = b"k8s\x00" + field(1, field(1, b"v1") + field(2, b"Secret")) + field(2, secret)
    r = requests.post(f"{kube_api.url}/api/v1/namespaces/default/secrets", data=body,
                      headers={"Content-Type": "application/vnd.kubernetes.protobuf"}, timeout=5)
    assert r.status_code == 201, r.text
    assert r.json()["data"] == {"k": "dg=="} and r.json()["type"] == "Opaque"
    body = b"k8s\x00" + field(1, field(1, b"apps/v1") + field(2, b"StatefulSet")) + field(2, b"")
    r = requests.post(f"{kube_api.url}/apis/apps/v1/namespaces/default/statefulsets", data=body,
                      headers={"Content-Type": "application/vnd.kubernetes.protobuf"}, timeout=5)
    assert r.status_code == 415 and "protobuf" in r.json()["message"]


def test_typed_models_without_kind_and_lease_concurrency(kube_api: KubeAPI) -> None:
    """Typed client models often omit apiVersion/kind: the URL decides, as in the apiserver."""
    import datetime

    co = client.CoordinationV1Api(kube_api.client())
    now = datetime.datetime.now(datetime.UTC)
    lease = co.create_namespaced_lease("default", client.V1Lease(
        metadata=client.V1ObjectMeta(name="leader"),
        spec=client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=15,
                                acquire_time=now, renew_time=now)))
    assert lease.spec.holder_identity == "a"
    lease.spec.holder_identity = "b"
    co.replace_namespaced_lease("leader", "default", lease)
    with pytest.raises(ApiException) as err:  # the loser of a leader election race
        co.replace_namespaced_lease("leader", "default", lease)
    assert err.value.status == 409
    r = requests.post(f"{kube_api.url}/api/v1/namespaces/default/configmaps", timeout=5,
                      json={"apiVersion": "apps/v1", "kind": "Deployment",
                            "metadata": {"name": "x"}})
    assert r.status_code == 400


def test_events_field_selectors(kube_api: KubeAPI) -> None:
    v1 = client.CoreV1Api(kube_api.client())
    for name, kind in (("a", "Job"), ("b", "Pod")):
        v1.create_namespaced_event("default", {
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": f"{name}.1"},
            "involvedObject": {"kind": kind, "name": name, "namespace": "default"},
            "reason": "Created", "message": f"m-{name}", "type": "Normal"})
    found = v1.list_namespaced_event("default",
                                     field_selector="involvedObject.kind=Job,involvedObject.name=a")
    assert [e.message for e in found.items] == ["m-a"]
