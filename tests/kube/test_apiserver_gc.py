"""Deletion: ownerReference garbage collection, finalizers, namespaces, deletecollection."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.fixtures.kube import KubeAPI


def owned(kind: str, name: str, owner: Any, **extra: Any) -> dict[str, Any]:
    api_version = "apps/v1" if kind == "ReplicaSet" else "v1"
    md = {"name": name, "ownerReferences": [{
        "apiVersion": owner.api_version, "kind": owner.kind, "name": owner.metadata.name,
        "uid": owner.metadata.uid, "controller": True, "blockOwnerDeletion": True}], **extra}
    if kind == "Pod":
        return {"apiVersion": api_version, "kind": kind, "metadata": md,
                "spec": {"containers": [{"name": "c", "image": "x:1"}]}}
    return {"apiVersion": api_version, "kind": kind, "metadata": md, "spec": {
        "selector": {"matchLabels": {"a": "b"}}, "template": {
            "metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}}


def tree(api: KubeAPI) -> tuple[Any, Any, Any]:
    apps = client.AppsV1Api(api.client())
    v1 = client.CoreV1Api(api.client())
    d = apps.create_namespaced_deployment("default", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
            "metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}})
    d.api_version, d.kind = "apps/v1", "Deployment"
    rs = apps.create_namespaced_replica_set("default", owned("ReplicaSet", "d-1", d))
    rs.api_version, rs.kind = "apps/v1", "ReplicaSet"
    pod = v1.create_namespaced_pod("default", owned("Pod", "d-1-x", rs))
    return d, rs, pod


def names(api: KubeAPI) -> tuple[list[str], list[str]]:
    apps = client.AppsV1Api(api.client())
    v1 = client.CoreV1Api(api.client())
    return ([r.metadata.name for r in apps.list_namespaced_replica_set("default").items],
            [p.metadata.name for p in v1.list_namespaced_pod("default").items])


@pytest.mark.parametrize("policy", ["Background", "Foreground"])
def test_cascading_delete(kube_api: KubeAPI, policy: str) -> None:
    tree(kube_api)
    apps = client.AppsV1Api(kube_api.client())
    apps.delete_namespaced_deployment("d", "default", propagation_policy=policy)
    assert names(kube_api) == ([], [])
    with pytest.raises(ApiException):
        apps.read_namespaced_deployment("d", "default")


def test_orphan_delete_keeps_dependents(kube_api: KubeAPI) -> None:
    tree(kube_api)
    apps = client.AppsV1Api(kube_api.client())
    apps.delete_namespaced_deployment("d", "default", propagation_policy="Orphan")
    assert names(kube_api) == (["d-1"], ["d-1-x"])
    assert not apps.read_namespaced_replica_set("d-1", "default").metadata.owner_references


def test_finalizers_delay_deletion(kube_api: KubeAPI) -> None:
    v1 = client.CoreV1Api(kube_api.client())
    v1.create_namespaced_config_map("default", {"apiVersion": "v1", "kind": "ConfigMap",
                                                "metadata": {"name": "f",
                                                             "finalizers": ["x/y"]}})
    v1.delete_namespaced_config_map("f", "default")
    pending = v1.read_namespaced_config_map("f", "default")
    assert pending.metadata.deletion_timestamp is not None
    with pytest.raises(ApiException) as err:  # no new finalizers while deleting
        v1.patch_namespaced_config_map("f", "default", {"metadata": {"finalizers": ["x/y", "z"]}})
    assert err.value.status == 422
    v1.patch_namespaced_config_map("f", "default", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as err:
        v1.read_namespaced_config_map("f", "default")
    assert err.value.status == 404


def test_dependent_of_missing_owner_is_collected(kube_api: KubeAPI) -> None:
    _, rs, _ = tree(kube_api)
    apps = client.AppsV1Api(kube_api.client())
    apps.delete_namespaced_deployment("d", "default")
    v1 = client.CoreV1Api(kube_api.client())
    v1.create_namespaced_pod("default", owned("Pod", "late", rs))
    assert names(kube_api) == ([], [])


def test_namespace_deletion_removes_content(kube_api: KubeAPI) -> None:
    v1 = client.CoreV1Api(kube_api.client())
    ns = kube_api.namespace()
    v1.create_namespaced_config_map(ns, {"apiVersion": "v1", "kind": "ConfigMap",
                                         "metadata": {"name": "c"}})
    v1.delete_namespace(ns)
    with pytest.raises(ApiException) as err:
        v1.read_namespace(ns)
    assert err.value.status == 404
    assert not v1.list_config_map_for_all_namespaces(field_selector=f"metadata.namespace={ns}"
                                                     ).items


def test_namespace_with_blocked_content_stays_terminating(kube_api: KubeAPI) -> None:
    v1 = client.CoreV1Api(kube_api.client())
    ns = kube_api.namespace()
    v1.create_namespaced_config_map(ns, {"apiVersion": "v1", "kind": "ConfigMap",
                                         "metadata": {"name": "c", "finalizers": ["a/b"]}})
    v1.delete_namespace(ns)
    assert v1.read_namespace(ns).status.phase == "Terminating"
    with pytest.raises(ApiException) as err:
        v1.create_namespaced_config_map(ns, {"apiVersion": "v1", "kind": "ConfigMap",
                                             "metadata": {"name": "new"}})
    assert err.value.status == 403 and "being terminated" in err.value.body
    v1.patch_namespaced_config_map("c", ns, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException):
        v1.read_namespace(ns)


def test_deletecollection_with_label_selector(kube_api: KubeAPI) -> None:
    v1 = client.CoreV1Api(kube_api.client())
    for i, tier in enumerate(["a", "a", "b"]):
        v1.create_namespaced_config_map("default", {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"c{i}", "labels": {"tier": tier}}})
    v1.delete_collection_namespaced_config_map("default", label_selector="tier=a")
    left = [c.metadata.name for c in v1.list_namespaced_config_map("default").items]
    assert left == ["c2"]
