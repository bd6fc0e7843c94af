"""helm install / upgrade / test / uninstall against the Kubernetes API stand-in.

`kube_api` (tests/fixtures/kube.py) is the project's API server stand-in, started
in-process without controllers: objects are stored, validated and RBAC is
evaluated for restricted tokens, but no pod runs. `kube` is the harness cluster
with controllers (pods run in podman); `helm test` needs it and the agent image
(tools/build-agent-image) and is skipped without them.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from chart_helpers import CHART, MINIMAL, example, find_helm, value_args

from tests.fixtures.kube import KubeAPI, start_kube_api

NAMESPACE = "mlops"
AGENT_SA = "ma-management-agent"
AGENT_TOKEN = "agent-sa-token"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[KubeAPI]:
    """A stand-in API server where AGENT_TOKEN acts as the agent's service account."""
    api = start_kube_api(tmp_path / "kube", restricted={AGENT_TOKEN: (NAMESPACE, AGENT_SA)})
    try:
        yield api
    finally:
        api.server.shutdown_all()


def _helm(api: KubeAPI, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([find_helm(), *args, "--kubeconfig", str(api.kubeconfig)],
                          capture_output=True, text=True, timeout=300, env=api.env())
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _get(api: KubeAPI, path: str) -> dict[str, Any] | None:
    """GET as the admin user; None on 404."""
    response = requests.get(api.url + path, timeout=30)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return dict(response.json())


def _install(api: KubeAPI, files: list[Path], sets: list[str], action: str = "install"
             ) -> None:
    _helm(api, action, "ma", str(CHART), "--namespace", NAMESPACE, "--create-namespace",
          *value_args(files, sets))


def _agent_kubeconfig(api: KubeAPI, tmp_path: Path) -> Path:
    """A kubeconfig that authenticates as the agent's service account."""
    config = yaml.safe_load(api.kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": AGENT_TOKEN}
    path = tmp_path / "agent-kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def _permission_check(kubeconfig: Path, *overrides: str) -> Any:
    from agent.config import load_settings
    from agent.doctor import Context, check_permissions

    settings = load_settings(None, environ={}, overrides=[
        "plugin.name=kubernetes", f"plugin.kubernetes.kubeconfig={kubeconfig}",
        "plugin.kubernetes.in_cluster=false", f"plugin.kubernetes.namespace={NAMESPACE}",
        *overrides])
    return check_permissions(Context(settings))


def test_install_upgrade_uninstall(cluster: KubeAPI) -> None:
    _install(cluster, [MINIMAL], [])
    base = f"/api/v1/namespaces/{NAMESPACE}"
    config_map = _get(cluster, f"{base}/configmaps/{AGENT_SA}")
    assert config_map is not None
    assert "workers: 4" in config_map["data"]["config.yaml"]
    deployment = _get(cluster, f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{AGENT_SA}")
    assert deployment is not None
    before = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    _install(cluster, [MINIMAL], ["agent.workers=8"], action="upgrade")
    config_map = _get(cluster, f"{base}/configmaps/{AGENT_SA}")
    assert config_map is not None and "workers: 8" in config_map["data"]["config.yaml"]
    deployment = _get(cluster, f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{AGENT_SA}")
    assert deployment is not None
    assert deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != before

    status = _helm(cluster, "status", "ma", "--namespace", NAMESPACE)
    assert "management-agent doctor" in status.stdout  # NOTES.txt

    _helm(cluster, "uninstall", "ma", "--namespace", NAMESPACE)
    assert _get(cluster, f"{base}/configmaps/{AGENT_SA}") is None
    assert _get(cluster, f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NAMESPACE}/roles/"
                         f"{AGENT_SA}") is None


@pytest.mark.parametrize("overlay", ["eks-ecr.yaml", "openshift.yaml", "local.yaml"])
def test_examples_install(cluster: KubeAPI, overlay: str) -> None:
    _install(cluster, example(overlay), ["serviceAccount.name=" + AGENT_SA])
    assert _get(cluster, f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{AGENT_SA}")


@pytest.mark.parametrize("sets", [[], ["imageBuilder.builder=kaniko"],
                                  ["agent.replicas=2", "agent.leaderElection.enabled=true"]])
def test_installed_role_passes_the_doctors_permission_check(
    cluster: KubeAPI, tmp_path: Path, sets: list[str]
) -> None:
    _install(cluster, [MINIMAL], sets)
    overrides = {
        "imageBuilder.builder=kaniko": ["images.builder=kaniko"],
        "agent.leaderElection.enabled=true": ["runtime.leader_election.enabled=true"],
    }
    result = _permission_check(_agent_kubeconfig(cluster, tmp_path),
                               *[o for s in sets for o in overrides.get(s, [])])
    assert result.status == "OK", result


def test_doctor_names_what_a_hand_made_role_lacks(cluster: KubeAPI, tmp_path: Path) -> None:
    _install(cluster, [MINIMAL], ["rbac.create=false"])
    result = _permission_check(_agent_kubeconfig(cluster, tmp_path))
    assert result.status == "FAIL"
    assert "create deployments (apps)" in result.detail


@pytest.fixture
def pod_reachable_control_plane(tmp_path: Path) -> Iterator[Any]:
    """The reference control plane on the harness address: the agent pod has a network
    namespace of its own, so 127.0.0.1 there would be the pod itself."""
    from tests.fixtures.controlplane import ControlPlaneServer
    from tests.fixtures.harness import harness_vars, require

    host = require(harness_vars(), "HARNESS_HOST")["HARNESS_HOST"]
    (tmp_path / "cp").mkdir()
    server = ControlPlaneServer(tmp_path / "cp", host=host)
    server.start()
    try:
        yield server
    finally:
        server.close()


def test_helm_test_runs_doctor_in_the_cluster(
    kube: KubeAPI, pod_reachable_control_plane: Any, tmp_path: Path
) -> None:
    """The harness cluster (pods run in podman) with the agent image in the harness registry:
    install local.yaml against a real reference control plane, wait for the agent to become
    ready, then `helm test` runs `management-agent doctor` in the cluster.

    The stand-in's pods get no in-cluster API address (KUBERNETES_SERVICE_HOST) and it
    speaks plain HTTP, so the agent reaches it through a kubeconfig mounted with the
    chart's own escape hatches (agent.extraVolumes + agent.extraConfig). Each pod has its
    own network: the control plane listens on the harness address, which pods reach."""
    from tests.fixtures.harness import harness_down, harness_vars

    control_plane = pod_reachable_control_plane
    env = harness_vars()
    registry = env.get("HARNESS_REGISTRY")
    image = f"{registry}/management-agent"
    if not registry or subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{image}:{_version()}"],
        capture_output=True, timeout=60,
    ).returncode != 0:
        harness_down("agent image not in the harness registry", "tools/build-agent-image")
    env_id, token = control_plane.create_environment()
    namespace = kube.namespace("chart")
    # the agent and its helm test pod must be admitted where Pod Security is restricted
    subprocess.run([_kubectl(), "label", "namespace", namespace,
                    "pod-security.kubernetes.io/enforce=restricted"],
                   check=True, capture_output=True, timeout=60, env=kube.env())
    subprocess.run([_kubectl(), "--namespace", namespace, "create", "secret", "generic",
                    "cp-token", f"--from-literal=token={token}"],
                   check=True, capture_output=True, timeout=60, env=kube.env())
    sets = [f"agent.image.repository={image}",
            f"controlPlane.url={control_plane.url}", f"controlPlane.environmentId={env_id}",
            "controlPlane.apiTokenSecret.name=cp-token",
            f"imageBuilder.generatedImageRepository={registry}/models",
            f"imageBuilder.insecureRegistries={{{registry}}}",
            f"predictionServer.serverProfiles.local-python.image={env['HARNESS_BASE_IMAGE']}",
            "artifacts.defaultCredentialsSecret="]
    helm_env = kube.env()
    subprocess.run([_kubectl(), "--namespace", namespace, "create", "secret", "generic",
                    "kubeconfig", f"--from-file=config={kube.kubeconfig}"],
                   check=True, capture_output=True, timeout=60, env=helm_env)
    overlay = tmp_path / "standin.yaml"
    overlay.write_text(yaml.safe_dump({"agent": {
        "extraVolumes": [{"name": "kubeconfig", "secret": {"secretName": "kubeconfig"}}],
        "extraVolumeMounts": [{"name": "kubeconfig", "mountPath": "/etc/management-agent/kube",
                               "readOnly": True}],
        "extraConfig": {"plugin": {"kubernetes": {
            "in_cluster": False, "kubeconfig": "/etc/management-agent/kube/config"}}},
    }}))
    try:
        proc = subprocess.run(
            [find_helm(), "install", "ma", str(CHART), "--namespace", namespace, "--wait",
             "--timeout", "4m", *value_args([*example("local.yaml"), overlay], sets)],
            capture_output=True, text=True, timeout=400, env=helm_env)
        assert proc.returncode == 0, proc.stderr + _describe(namespace, helm_env)
        test = subprocess.run([find_helm(), "test", "ma", "--namespace", namespace, "--logs",
                               "--timeout", "4m"],
                              capture_output=True, text=True, timeout=400, env=helm_env)
        assert test.returncode == 0, test.stdout + test.stderr + _describe(namespace, helm_env)
        print(test.stdout)
        for check in ("control-plane", "permissions", "registry-push", "base-image"):
            assert re.search(rf"^{check} +OK ", test.stdout, re.MULTILINE), test.stdout
    finally:
        subprocess.run([find_helm(), "uninstall", "ma", "--namespace", namespace],
                       capture_output=True, timeout=120, env=helm_env)
        subprocess.run([_kubectl(), "delete", "namespace", namespace, "--wait=false"],
                       capture_output=True, timeout=120, env=helm_env)


def _describe(namespace: str, env: dict[str, str]) -> str:
    """Pods, their status and logs: what to read when the install did not become ready."""
    out = []
    for args in (["get", "pods", "-o", "yaml"], ["logs", "-l", "app.kubernetes.io/name="
                 "management-agent", "--tail", "40", "--all-containers"]):
        proc = subprocess.run([_kubectl(), "--namespace", namespace, *args],
                              capture_output=True, text=True, timeout=60, env=env)
        out.append(f"\n--- kubectl {' '.join(args)}\n{proc.stdout}{proc.stderr}")
    return "".join(out)


def _version() -> str:
    from agent import __version__

    return __version__


def _kubectl() -> str:
    from tests.fixtures.kube import find_binary

    return find_binary("kubectl") or "kubectl"
