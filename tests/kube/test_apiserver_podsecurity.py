"""Pod Security and ServiceAccount admission of the stand-in API server (in-process, no node).

Expected messages are the ones k8s.io/pod-security-admission and the ServiceAccount
admission plugin produce (their sources: see tools/kube/apiserver/podsecurity.py).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests

from tests.fixtures.kube import KubeAPI
from tools.kube.apiserver import podsecurity

PSA = "pod-security.kubernetes.io/"


def ns_with(kube_api: KubeAPI, labels: dict[str, str]) -> str:
    name = kube_api.namespace("psa")
    r = requests.patch(f"{kube_api.url}/api/v1/namespaces/{name}",
                       json={"metadata": {"labels": labels}},
                       headers={"Content-Type": "application/merge-patch+json"}, timeout=10)
    assert r.status_code == 200, r.text
    return name


def pod(name: str, **container: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "img:1", **container}]}}


RESTRICTED_OK = {"securityContext": {
    "runAsNonRoot": True, "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}}


def warnings(r: requests.Response) -> list[str]:
    """The texts of the response's Warning headers, unquoted as kubectl does."""
    raw = r.headers.get("Warning", "")
    return [re.sub(r"\\(.)", r"\1", m) for m in re.findall(r'299 - "((?:[^"\\]|\\.)*)"', raw)]


def create(kube_api: KubeAPI, ns: str, body: dict[str, Any], plural: str = "pods",
           group: str = "api/v1") -> requests.Response:
    return requests.post(f"{kube_api.url}/{group}/namespaces/{ns}/{plural}", json=body,
                         timeout=10)


def test_privileged_pod_in_restricted_namespace_is_refused_with_every_violation(
        kube_api: KubeAPI) -> None:
    ns = ns_with(kube_api, {PSA + "enforce": "restricted"})
    r = create(kube_api, ns, pod("x", securityContext={"privileged": True}))
    assert r.status_code == 403
    status = r.json()
    assert status["reason"] == "Forbidden"
    assert status["details"] == {"name": "x", "kind": "pods"}
    assert status["message"] == (
        'pods "x" is forbidden: violates PodSecurity "restricted:latest": '
        'privileged (container "c" must not set securityContext.privileged=true), '
        'allowPrivilegeEscalation != false (container "c" must set '
        "securityContext.allowPrivilegeEscalation=false), "
        'unrestricted capabilities (container "c" must set '
        'securityContext.capabilities.drop=["ALL"]), '
        'runAsNonRoot != true (pod or container "c" must set securityContext.runAsNonRoot=true), '
        'seccompProfile (pod or container "c" must set securityContext.seccompProfile.type to '
        '"RuntimeDefault" or "Localhost")')
    assert requests.get(f"{kube_api.url}/api/v1/namespaces/{ns}/pods/x",
                        timeout=10).status_code == 404


def test_compliant_pod_is_admitted_and_baseline_allows_what_restricted_refuses(
        kube_api: KubeAPI) -> None:
    restricted = ns_with(kube_api, {PSA + "enforce": "restricted"})
    assert create(kube_api, restricted, pod("ok", **RESTRICTED_OK)).status_code == 201
    baseline = ns_with(kube_api, {PSA + "enforce": "baseline",
                                  PSA + "enforce-version": "v1.33"})
    assert create(kube_api, baseline, pod("plain")).status_code == 201
    r = create(kube_api, baseline, {**pod("hostile"), "spec": {
        "hostNetwork": True, "containers": [{
            "name": "c", "image": "img:1", "ports": [{"containerPort": 80, "hostPort": 80}],
            "securityContext": {"capabilities": {"add": ["NET_ADMIN", "CHOWN"]}}}],
        "volumes": [{"name": "host", "hostPath": {"path": "/etc"}}]}})
    assert r.status_code == 403
    assert r.json()["message"] == (
        'pods "hostile" is forbidden: violates PodSecurity "baseline:v1.33": '
        "host namespaces (hostNetwork), "
        'hostPort (container "c" uses hostPort 80), '
        'non-default capabilities (container "c" must not include "NET_ADMIN" in '
        "securityContext.capabilities.add), "
        'hostPath volumes (volume "host")')


def test_deployment_is_admitted_with_a_warning_and_audit_only_logs(kube_api: KubeAPI) -> None:
    ns = ns_with(kube_api, {PSA + "enforce": "restricted", PSA + "warn": "restricted",
                            PSA + "audit": "baseline"})
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
           "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
               "metadata": {"labels": {"app": "web"}},
               "spec": {"containers": [{"name": "c", "image": "img:1",
                                        **RESTRICTED_OK}]}}}}
    dep["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {
        **RESTRICTED_OK["securityContext"], "runAsUser": 0}
    r = create(kube_api, ns, dep, "deployments", "apis/apps/v1")
    assert r.status_code == 201, r.text
    assert warnings(r) == ['would violate PodSecurity "restricted:latest": '
                           'runAsUser=0 (container "c" must not set runAsUser=0)']


def test_warn_label_alone_warns_on_pods_without_refusing(kube_api: KubeAPI) -> None:
    ns = ns_with(kube_api, {PSA + "warn": "baseline"})
    r = create(kube_api, ns, pod("w", securityContext={"privileged": True}))
    assert r.status_code == 201
    assert warnings(r)[0].startswith('would violate PodSecurity "baseline:latest": privileged')


def test_bad_namespace_labels_are_invalid(kube_api: KubeAPI) -> None:
    name = kube_api.namespace("psa")
    r = requests.patch(f"{kube_api.url}/api/v1/namespaces/{name}",
                       json={"metadata": {"labels": {PSA + "enforce": "strict"}}},
                       headers={"Content-Type": "application/merge-patch+json"}, timeout=10)
    assert r.status_code == 422
    assert r.json()["message"] == (
        f'Namespace "{name}" is invalid: metadata.labels[{PSA}enforce]: Invalid value: '
        '"strict": must be one of privileged, baseline, restricted')


def test_labelling_a_namespace_warns_about_existing_pods(kube_api: KubeAPI) -> None:
    name = kube_api.namespace("psa")
    for n in ("a", "b"):
        assert create(kube_api, name, pod(n, securityContext={"privileged": True})
                      ).status_code == 201
    r = requests.patch(f"{kube_api.url}/api/v1/namespaces/{name}",
                       json={"metadata": {"labels": {PSA + "enforce": "baseline"}}},
                       headers={"Content-Type": "application/merge-patch+json"}, timeout=10)
    assert r.status_code == 200
    assert warnings(r) == [f'existing pods in namespace "{name}" violate the new PodSecurity '
                           'enforce level "baseline:latest"', "a (and 1 other pod): privileged"]


def test_pod_naming_a_missing_service_account_is_refused(kube_api: KubeAPI) -> None:
    ns = kube_api.namespace("sa")
    body = pod("p")
    body["spec"]["serviceAccountName"] = "builder"
    r = create(kube_api, ns, body)
    assert r.status_code == 403
    assert r.json()["message"] == (f'pods "p" is forbidden: error looking up service account '
                                   f'{ns}/builder: serviceaccount "builder" not found')


def test_pod_gets_the_service_accounts_pull_secrets(kube_api: KubeAPI) -> None:
    ns = kube_api.namespace("sa")
    r = requests.post(f"{kube_api.url}/api/v1/namespaces/{ns}/serviceaccounts", json={
        "metadata": {"name": "puller"}, "imagePullSecrets": [{"name": "regcred"}]}, timeout=10)
    assert r.status_code == 201
    body = pod("p")
    body["spec"]["serviceAccountName"] = "puller"
    created = create(kube_api, ns, body).json()
    assert created["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    own = pod("own")
    own["spec"].update(serviceAccountName="puller", imagePullSecrets=[{"name": "mine"}])
    assert create(kube_api, ns, own).json()["spec"]["imagePullSecrets"] == [{"name": "mine"}]
    assert create(kube_api, ns, pod("d")).json()["spec"]["serviceAccountName"] == "default"


@pytest.mark.parametrize(("spec", "level", "expected"), [
    ({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"},
                                      {"name": "net.ipv4.tcp_syncookies", "value": "1"}]}},
     "baseline", "forbidden sysctls (kernel.msgmax)"),
    ({"containers": [{"name": "c", "securityContext": {"procMount": "Unmasked"}}]},
     "baseline", 'procMount (container "c" must not set securityContext.procMount to '
                 '"Unmasked")'),
    ({"securityContext": {"seLinuxOptions": {"type": "spc_t", "user": "u"}}},
     "baseline", 'seLinuxOptions (pod set forbidden securityContext.seLinuxOptions: type '
                 '"spc_t"; user may not be set)'),
    ({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}},
     "baseline", 'forbidden AppArmor profile (pod must not set AppArmor profile type to '
                 '"Unconfined")'),
    ({"hostPID": True, "hostIPC": True}, "baseline", "host namespaces (hostIPC, hostPID)"),
    ({"volumes": [{"name": "n", "nfs": {"server": "s", "path": "/"}},
                  {"name": "e", "emptyDir": {}}]},
     "restricted", 'restricted volume types (volumes ["n"] have restricted types)'),
])
def test_checks_match_the_library(spec: dict[str, Any], level: str, expected: str) -> None:
    full: dict[str, Any] = {"containers": [{"name": "c", **RESTRICTED_OK}], **spec}
    if "containers" in spec:
        full["containers"] = [{**RESTRICTED_OK, **c, "securityContext": {
            **RESTRICTED_OK["securityContext"], **c["securityContext"]}}
            for c in spec["containers"]]
    if level == "restricted":
        full.setdefault("securityContext", {})
    policy = podsecurity.Policy({PSA + "enforce": level})
    assert policy.evaluate("enforce", {}, full) == expected


def test_older_policy_versions_skip_newer_checks() -> None:
    spec = {"containers": [{"name": "c", "securityContext": {
        "runAsNonRoot": True, "allowPrivilegeEscalation": False, "runAsUser": 0,
        "seccompProfile": {"type": "RuntimeDefault"}}}]}
    v121 = podsecurity.Policy({PSA + "enforce": "restricted", PSA + "enforce-version": "v1.21"})
    assert v121.evaluate("enforce", {}, spec) == ""
    latest = podsecurity.Policy({PSA + "enforce": "restricted"})
    assert latest.evaluate("enforce", {}, spec).startswith("unrestricted capabilities")


def image_volume_pod(name: str) -> dict[str, Any]:
    body = pod(name, **RESTRICTED_OK, volumeMounts=[{"name": "model", "mountPath": "/mnt/m"}])
    body["spec"]["volumes"] = [{"name": "model", "image": {
        "reference": "reg/models:mv-1", "pullPolicy": "IfNotPresent"}}]
    return body


def test_image_volume_is_admitted_under_restricted_from_1_35(
        kube_api: KubeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    from tools.kube.apiserver import version

    monkeypatch.setattr(version, "_configured", "1.35.0")
    assert requests.get(f"{kube_api.url}/version", timeout=10).json()["gitVersion"] == "v1.35.0"
    ns = ns_with(kube_api, {PSA + "enforce": "restricted"})
    r = create(kube_api, ns, image_volume_pod("iv"))
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["volumes"][0]["image"]["reference"] == "reg/models:mv-1"


def test_server_before_1_35_refuses_an_image_volume_like_a_disabled_feature_gate(
        kube_api: KubeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """ImageVolume is off by default before 1.35: the field is dropped, the volume has no
    source, and validation says so (pkg/apis/core/validation: "must specify a volume type")."""
    from tools.kube.apiserver import version

    monkeypatch.setattr(version, "_configured", "1.34.2")
    assert requests.get(f"{kube_api.url}/version", timeout=10).json()["minor"] == "34"
    r = create(kube_api, kube_api.namespace("old"), image_volume_pod("iv"))
    assert r.status_code == 422, r.text
    assert r.json()["details"]["causes"] == [{
        "reason": "FieldValueRequired", "field": "spec.volumes[0]",
        "message": "Required value: must specify a volume type"}]
    assert 'spec.volumes[0]: Required value: must specify a volume type' in r.json()["message"]
