"""RBAC mode: a restricted token acts as a ServiceAccount authorized by Roles/RoleBindings."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.fixtures.kube import KubeAPI, start_kube_api

TOKEN = "sa-token"


@pytest.fixture
def rbac_api(tmp_path: Path) -> Iterator[KubeAPI]:
    api = start_kube_api(tmp_path / "k", restricted={TOKEN: ("team", "agent")})
    try:
        yield api
    finally:
        api.server.shutdown_all()


def admin(api: KubeAPI, method: str, path: str, body: dict[str, object]) -> None:
    r = requests.request(method, f"{api.url}{path}", json=body, timeout=5,
                         headers={"Authorization": "Bearer admin-token"})
    assert r.status_code in (200, 201), r.text


def as_sa(api: KubeAPI, method: str, path: str, body: object = None) -> requests.Response:
    return requests.request(method, f"{api.url}{path}", json=body, timeout=5,
                            headers={"Authorization": f"Bearer {TOKEN}"})


def setup_role(api: KubeAPI) -> None:
    admin(api, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                             "metadata": {"name": "team"}})
    admin(api, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/team/roles", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "agent"},
        "rules": [{"apiGroups": ["apps"], "resources": ["deployments"],
                   "verbs": ["get", "list", "watch"]},
                  {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get"]}]})
    admin(api, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/team/rolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "agent"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "agent"},
        "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": "team"}]})


def test_role_binding_allows_and_denies(rbac_api: KubeAPI) -> None:
    setup_role(rbac_api)
    assert as_sa(rbac_api, "GET", "/apis/apps/v1/namespaces/team/deployments").status_code == 200
    r = as_sa(rbac_api, "POST", "/apis/apps/v1/namespaces/team/deployments", {})
    assert r.status_code == 403
    assert r.json() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'deployments.apps is forbidden: User "system:serviceaccount:team:agent" '
                   'cannot create resource "deployments" in API group "apps" in the namespace '
                   '"team"',
        "reason": "Forbidden", "details": {"group": "apps", "kind": "deployments"}, "code": 403}
    r = as_sa(rbac_api, "GET", "/api/v1/namespaces/other/secrets/s")
    assert r.status_code == 403
    assert r.json()["message"] == (
        'secrets "s" is forbidden: User "system:serviceaccount:team:agent" cannot get resource '
        '"secrets" in API group "" in the namespace "other"')
    r = as_sa(rbac_api, "GET", "/api/v1/namespaces")
    assert r.status_code == 403 and r.json()["message"].endswith("at the cluster scope")
    assert as_sa(rbac_api, "GET", "/api/v1").status_code == 200  # discovery is open


def test_self_subject_access_review(rbac_api: KubeAPI) -> None:
    setup_role(rbac_api)
    path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"

    def review(verb: str, resource: str, group: str = "apps") -> bool:
        r = as_sa(rbac_api, "POST", path, {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": "team", "verb": verb,
                                            "group": group, "resource": resource}}})
        assert r.status_code == 201
        return bool(r.json()["status"]["allowed"])

    assert review("list", "deployments")
    assert not review("delete", "deployments")
    assert not review("get", "secrets", "")
    r = requests.post(f"{rbac_api.url}{path}", timeout=5, json={
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "delete", "resource": "nodes"}}})
    assert r.json()["status"]["allowed"] is True  # admin


def test_kubectl_over_tls_with_restricted_token(tmp_path: Path) -> None:
    """client-go sends bearer tokens only over TLS: the RBAC mode with kubectl needs --tls."""
    from tests.fixtures.kube import require_binary

    kubectl = require_binary("kubectl")
    api = start_kube_api(tmp_path / "k", restricted={TOKEN: ("team", "agent")}, tls=True)
    try:
        assert api.url.startswith("https://")

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([kubectl, *args], capture_output=True, text=True,
                                  env=api.env(), timeout=30)

        assert run("create", "namespace", "team").returncode == 0
        assert run("-n", "team", "create", "role", "agent", "--verb=get,list",
                   "--resource=pods").returncode == 0
        assert run("-n", "team", "create", "rolebinding", "agent", "--role=agent",
                   "--serviceaccount=team:agent").returncode == 0
        assert run("--token", TOKEN, "-n", "team", "get", "pods").returncode == 0
        denied = run("--token", TOKEN, "-n", "team", "get", "deployments")
        assert denied.returncode != 0
        assert ('Error from server (Forbidden): deployments.apps is forbidden: User '
                '"system:serviceaccount:team:agent" cannot list resource "deployments" in API '
                'group "apps" in the namespace "team"') in denied.stderr
        assert run("--token", TOKEN, "-n", "team", "auth", "can-i", "delete",
                   "pods").stdout.strip() == "no"
    finally:
        api.server.shutdown_all()
