"""PATCH over HTTP: JSON patch, merge patch, strategic merge patch, server-side apply."""

from __future__ import annotations

from typing import Any

import requests
import yaml

from tests.fixtures.kube import KubeAPI

DEPLOY = "/apis/apps/v1/namespaces/default/deployments"


def deploy(image: str = "x:1", replicas: int = 1) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "d"}},
                     "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [
                         {"name": "c", "image": image, "env": [{"name": "A", "value": "1"}]}]}}}}


def patch(api: KubeAPI, body: Any, ctype: str, path: str = f"{DEPLOY}/d",
          **params: str) -> requests.Response:
    data = yaml.safe_dump(body) if "yaml" in ctype else None
    return requests.patch(f"{api.url}{path}", params=params, timeout=5,
                          data=data, json=None if data else body,
                          headers={"Content-Type": ctype})


def test_json_and_merge_patch(kube_api: KubeAPI) -> None:
    requests.post(f"{kube_api.url}{DEPLOY}", json=deploy(), timeout=5).raise_for_status()
    r = patch(kube_api, [{"op": "replace", "path": "/spec/replicas", "value": 3},
                         {"op": "add", "path": "/metadata/labels", "value": {"x": "y"}}],
              "application/json-patch+json")
    assert r.status_code == 200 and r.json()["spec"]["replicas"] == 3
    assert r.json()["metadata"]["generation"] == 2
    r = patch(kube_api, [{"op": "test", "path": "/spec/replicas", "value": 9}],
              "application/json-patch+json")
    assert r.status_code == 422
    r = patch(kube_api, {"metadata": {"labels": {"x": None, "z": "1"}}},
              "application/merge-patch+json")
    assert r.json()["metadata"]["labels"] == {"z": "1"}
    r = patch(kube_api, {"spec": {"template": {"spec": {"containers": [
        {"name": "c2", "image": "y:1"}]}}}}, "application/merge-patch+json")
    assert [c["name"] for c in r.json()["spec"]["template"]["spec"]["containers"]] == ["c2"]
    r = patch(kube_api, {"metadata": {"resourceVersion": "1"}}, "application/merge-patch+json")
    assert r.status_code == 409 and r.json()["reason"] == "Conflict"
    r = patch(kube_api, {}, "text/plain")
    assert r.status_code == 415
    r = patch(kube_api, {}, "application/merge-patch+json", path=f"{DEPLOY}/missing")
    assert r.status_code == 404


def test_strategic_merge_patch(kube_api: KubeAPI) -> None:
    requests.post(f"{kube_api.url}{DEPLOY}", json=deploy(), timeout=5).raise_for_status()
    r = patch(kube_api, {"spec": {"template": {"spec": {"containers": [
        {"name": "c", "env": [{"name": "B", "value": "2"}]},
        {"name": "side", "image": "s:1"}]}}}}, "application/strategic-merge-patch+json")
    pod = r.json()["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["c", "side"]
    assert pod["containers"][0]["image"] == "x:1"
    assert [e["name"] for e in pod["containers"][0]["env"]] == ["A", "B"]
    assert pod["containers"][1]["imagePullPolicy"] == "IfNotPresent"  # defaulted
    r = patch(kube_api, {"spec": {"template": {"spec": {"containers": [
        {"name": "side", "$patch": "delete"}]}}}}, "application/strategic-merge-patch+json")
    assert [c["name"] for c in r.json()["spec"]["template"]["spec"]["containers"]] == ["c"]


def test_server_side_apply(kube_api: KubeAPI) -> None:
    ctype = "application/apply-patch+yaml"
    r = patch(kube_api, deploy(), ctype, fieldManager="agent")
    assert r.status_code == 201  # create-if-missing
    managed = r.json()["metadata"]["managedFields"]
    assert [(m["manager"], m["operation"]) for m in managed] == [("agent", "Apply")]
    assert "f:replicas" in managed[0]["fieldsV1"]["f:spec"]
    r = patch(kube_api, deploy(), ctype)
    assert r.status_code == 400 and "fieldManager" in r.json()["message"]
    rv = r = patch(kube_api, deploy(), ctype, fieldManager="agent")
    assert r.status_code == 200
    # another writer changes replicas: the applier now conflicts on it
    r = patch(kube_api, {"spec": {"replicas": 5}}, "application/merge-patch+json",
              fieldManager="hpa")
    assert r.json()["spec"]["replicas"] == 5
    r = patch(kube_api, deploy(replicas=2), ctype, fieldManager="agent")
    assert r.status_code == 409
    body = r.json()
    assert body["reason"] == "Conflict"
    assert body["message"] == ('Apply failed with 1 conflict: conflict with "hpa" using apps/v1: '
                               ".spec.replicas")
    assert body["details"]["causes"] == [{"reason": "FieldManagerConflict", "message":
                                          'conflict with "hpa" using apps/v1',
                                          "field": ".spec.replicas"}]
    # same value: shared ownership, no conflict
    r = patch(kube_api, deploy(replicas=5), ctype, fieldManager="agent")
    assert r.status_code == 200
    r = patch(kube_api, deploy(replicas=2, image="x:2"), ctype, fieldManager="agent",
              force="true")
    assert r.status_code == 200 and r.json()["spec"]["replicas"] == 2
    assert r.json()["metadata"]["generation"] > rv.json()["metadata"]["generation"]
    # fields dropped from the applied config are removed
    smaller = deploy(image="x:2")
    del smaller["spec"]["template"]["spec"]["containers"][0]["env"]
    r = patch(kube_api, smaller, ctype, fieldManager="agent")
    assert "env" not in r.json()["spec"]["template"]["spec"]["containers"][0]


def test_apply_status_subresource(kube_api: KubeAPI) -> None:
    requests.post(f"{kube_api.url}{DEPLOY}", json=deploy(), timeout=5).raise_for_status()
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "status": {"replicas": 1, "readyReplicas": 1}}
    r = patch(kube_api, body, "application/apply-patch+yaml", path=f"{DEPLOY}/d/status",
              fieldManager="ctrl")
    assert r.status_code == 200 and r.json()["status"]["readyReplicas"] == 1
    assert r.json()["spec"]["replicas"] == 1
