"""An order asks for the agent's own ServiceAccount (issue 14, item 5), end to end.

A real agent process with the Kubernetes plugin against the harness cluster and the real
reference control plane: the deployment names the ServiceAccount the agent runs as (which
exists, so a real API server would accept the pod and a cloud identity bound to that account
would follow). The agent must refuse before it applies anything, and the control plane must
get the refusal as the action's failing result, naming the setting ops would change.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.plugins.kubernetes.client import KubeClient
from agent.plugins.kubernetes.settings import KubernetesSettings
from tests.fixtures.agent_process import AgentProcess
from tests.fixtures.controlplane import ControlPlaneServer, _failed
from tests.fixtures.harness import harness_vars, require
from tests.fixtures.kube import harness_namespace

pytestmark = [pytest.mark.integration]

AGENT_SA = "management-agent"


@pytest.fixture
def cluster() -> Iterator[dict[str, str]]:
    env = require(harness_vars(), "HARNESS_KUBECONFIG")
    with harness_namespace(env, "sec-sa") as namespaced:
        yield namespaced


@pytest.fixture
def kube(cluster: dict[str, str]) -> Iterator[KubeClient]:
    client = KubeClient(KubernetesSettings(kubeconfig=Path(cluster["HARNESS_KUBECONFIG"]),
                                           namespace=cluster["NAMESPACE"]))
    try:
        yield client
    finally:
        client.close()


def test_an_order_for_the_agents_service_account_fails_before_anything_is_applied(
        control_plane: ControlPlaneServer, cluster: dict[str, str], kube: KubeClient,
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    namespace = cluster["NAMESPACE"]
    kube.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": AGENT_SA}})
    env_id, token = control_plane.create_environment("sec-sa")
    borrow = control_plane.deploy(env_id, "borrow", "m1", uri="s3://models/m1",
                                  config={"service_account_name": AGENT_SA})
    other = control_plane.deploy(env_id, "other", "m1", uri="s3://models/m1",
                                 config={"service_account_name": "cluster-reader"})
    agent = AgentProcess(
        tmp_path, control_plane.url, env_id, token,
        plugin__name="kubernetes", plugin__kubernetes__kubeconfig=cluster["HARNESS_KUBECONFIG"],
        plugin__kubernetes__namespace=namespace,
        plugin__kubernetes__deployment_policy={  # a pattern that also matches the agent's
            "allowed_service_accounts": ["default", "management-*"],
            "agent_service_accounts": [f"{namespace}/{AGENT_SA}"]})
    try:
        assert agent.run_once() == 0
        results = {key: control_plane.admin.get_action(env_id, action["id"])
                   for key, action in (("borrow", borrow), ("other", other))}
        for key, action in results.items():
            assert action["state"] == "completed", key
            assert action["result"]["status"] == "failing", key
        message = results["borrow"]["result"]["data"]["message"]
        assert "config.service_account_name 'management-agent' is the agent's own " \
               "ServiceAccount" in message, message
        assert "plugin.kubernetes.deployment_policy.agent_service_accounts" in message
        assert "invalid server profile" not in message and "internal" not in message
        assert "'cluster-reader' is not allowed (allowed: default, management-*)" in \
            results["other"]["result"]["data"]["message"]
        for kind, api in (("Deployment", "apps/v1"), ("Service", "v1"),
                          ("Ingress", "networking.k8s.io/v1")):
            assert kube.list(api, kind) == [], kind
    finally:
        agent.stop()
        if _failed(request):
            print(agent.log()[-4000:])
